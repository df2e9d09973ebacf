//! Just enough of the W3C WebDriver protocol (JSON over HTTP) to drive Debian's headless
//! Chromium through `chromedriver`: one session, navigation, elements found by CSS or
//! XPath, clicks, typing, scripts. The guard ends the session and kills chromedriver and
//! every Chromium of its profile when dropped, even when a test panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The W3C name of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What is missing for a browser test here, if anything.
pub fn missing() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} is not installed (Debian's chromium and chromium-driver)"))
}

/// A headless Chromium with its own profile, behind its own chromedriver.
pub struct Browser {
    driver: Child,
    base: String,
    session: Option<String>,
    profile: PathBuf,
    agent: ureq::Agent,
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free loopback port and a session in a fresh profile
    /// under `scratch`.
    pub fn start(scratch: &Path) -> Result<Browser> {
        let port = hutch_tests::free_port();
        let profile = scratch.join("chromium-profile");
        std::fs::create_dir_all(&profile)?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start chromedriver")?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: None,
            profile,
            agent,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = browser
                .call("GET", "/status", None)
                .is_ok_and(|v| v["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not answer within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", browser.profile.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let session = browser.call("POST", "/session", Some(caps))?;
        let id = session["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {session}"))?;
        browser.session = Some(id.to_string());
        Ok(browser)
    }

    /// One WebDriver command; its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = self
            .agent
            .request(method, &url)
            .set("Content-Type", "application/json");
        let resp = match body {
            Some(b) => req.send_string(&b.to_string()),
            None if method == "POST" => req.send_string("{}"),
            None => req.call(),
        };
        let text = match resp {
            Ok(r) => r.into_string()?,
            Err(ureq::Error::Status(code, r)) => {
                let text = r.into_string().unwrap_or_default();
                bail!("WebDriver {method} {path}: {code}: {text}");
            }
            Err(e) => bail!("WebDriver {method} {path}: {e}"),
        };
        let v: Value = serde_json::from_str(&text).with_context(|| format!("parse {text}"))?;
        Ok(v["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let id = self
            .session
            .as_deref()
            .ok_or_else(|| anyhow!("no session"))?;
        self.call(method, &format!("/session/{id}{path}"), body)
    }

    pub fn goto(&self, url: &str) -> Result<()> {
        self.session_call("POST", "/url", Some(json!({"url": url})))?;
        Ok(())
    }

    pub fn url(&self) -> Result<String> {
        Ok(self
            .session_call("GET", "/url", None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    fn find_by(&self, using: &str, value: &str) -> Result<Element> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": using, "value": value})),
        )?;
        v[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_string()))
            .ok_or_else(|| anyhow!("no element for {value}"))
    }

    pub fn css(&self, selector: &str) -> Result<Element> {
        self.find_by("css selector", selector)
    }

    pub fn xpath(&self, path: &str) -> Result<Element> {
        self.find_by("xpath", path)
    }

    /// Waits (polling) for an element; the page renders what it fetches as it comes.
    pub fn wait_css(&self, selector: &str) -> Result<Element> {
        self.wait(&format!("element {selector}"), || self.css(selector).ok())
    }

    pub fn wait_xpath(&self, path: &str) -> Result<Element> {
        self.wait(&format!("element {path}"), || self.xpath(path).ok())
    }

    pub fn click(&self, e: &Element) -> Result<()> {
        self.session_call("POST", &format!("/element/{}/click", e.0), None)?;
        Ok(())
    }

    pub fn clear(&self, e: &Element) -> Result<()> {
        self.session_call("POST", &format!("/element/{}/clear", e.0), None)?;
        Ok(())
    }

    /// Types `text` into the element (WebDriver's key codes: `\u{E007}` is Enter).
    pub fn type_into(&self, e: &Element, text: &str) -> Result<()> {
        self.session_call(
            "POST",
            &format!("/element/{}/value", e.0),
            Some(json!({"text": text})),
        )?;
        Ok(())
    }

    /// Accepts the page's `confirm()` dialog, once it is open.
    pub fn accept_alert(&self) -> Result<()> {
        self.wait("a dialog", || {
            self.session_call("POST", "/alert/accept", None).ok()
        })?;
        Ok(())
    }

    /// The selected option's value of a `<select>`, or an input's value.
    pub fn value(&self, e: &Element) -> Result<String> {
        Ok(self
            .session_call("GET", &format!("/element/{}/property/value", e.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub fn text(&self, e: &Element) -> Result<String> {
        Ok(self
            .session_call("GET", &format!("/element/{}/text", e.0), None)?
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Runs `script` (a function body) in the page; what it returns.
    pub fn script(&self, script: &str) -> Result<Value> {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// The viewport as a phone's (Chrome's device emulation): `width` CSS pixels wide.
    pub fn emulate_width(&self, width: u32, height: u32) -> Result<()> {
        self.session_call(
            "POST",
            "/goog/cdp/execute",
            Some(
                json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                    "width": width, "height": height, "deviceScaleFactor": 1, "mobile": true,
                }}),
            ),
        )?;
        Ok(())
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let v = self.session_call("GET", "/screenshot", None)?;
        let png = hutch_tls::base64_decode(v.as_str().unwrap_or_default())
            .ok_or_else(|| anyhow!("a screenshot that is not base64"))?;
        std::fs::write(path, png)?;
        Ok(())
    }

    /// Polls `f` until it gives a value, for up to 30 s.
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("waited 30 s for {what}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_some() {
            let _ = self.session_call("DELETE", "", None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Whatever Chromium of this profile is left (a session that did not end), until
        // none is (a killed process takes a moment to go).
        let marker = format!("--user-data-dir={}", self.profile.display());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = processes_with_arg(&marker);
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Live processes (not zombies) with `arg` among their arguments.
fn processes_with_arg(arg: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // A zombie's cmdline is empty: it is gone but for its parent's wait.
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()) {
            found.push(pid);
        }
    }
    found
}
