//! `hutch config device ...` and `hutch profile device ...`: the same subcommands, messages
//! and errors as lxc's `config_device.go`, on an instance or on a profile.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::lxc_format;
use crate::http::{encode, Client};

#[derive(Args)]
pub struct AddArgs {
    /// The instance or profile.
    name: String,
    device: String,
    /// The device type (disk, nic, unix-char, unix-block, gpu, none...).
    #[arg(value_name = "TYPE")]
    kind: String,
    /// key=value device options.
    props: Vec<String>,
}

#[derive(Args)]
pub struct KeyArgs {
    name: String,
    device: String,
    key: String,
}

#[derive(Args)]
pub struct NameArgs {
    name: String,
}

#[derive(Args)]
pub struct RemoveArgs {
    name: String,
    #[arg(required = true)]
    devices: Vec<String>,
}

#[derive(Args)]
pub struct SetArgs {
    name: String,
    device: String,
    /// key=value... (or one `key value`).
    #[arg(required = true)]
    props: Vec<String>,
}

#[derive(Args)]
pub struct OverrideArgs {
    name: String,
    device: String,
    /// key=value overrides.
    props: Vec<String>,
}

/// `hutch config device ...`.
#[derive(Subcommand)]
pub enum InstanceDeviceCmd {
    /// Add an instance device: INSTANCE DEVICE TYPE [key=value...].
    Add(AddArgs),
    /// Get a device key: INSTANCE DEVICE KEY.
    Get(KeyArgs),
    /// List the instance's own devices.
    #[command(alias = "ls")]
    List(NameArgs),
    /// Copy a profile's device into the instance with overrides: INSTANCE DEVICE [key=value...].
    Override(OverrideArgs),
    /// Remove instance devices: INSTANCE DEVICE...
    #[command(alias = "rm")]
    Remove(RemoveArgs),
    /// Set device keys: INSTANCE DEVICE key=value...
    Set(SetArgs),
    /// Show the instance's own devices as YAML.
    Show(NameArgs),
    /// Unset a device key: INSTANCE DEVICE KEY.
    Unset(KeyArgs),
}

/// `hutch profile device ...`.
#[derive(Subcommand)]
pub enum ProfileDeviceCmd {
    /// Add a profile device: PROFILE DEVICE TYPE [key=value...].
    Add(AddArgs),
    /// Get a device key: PROFILE DEVICE KEY.
    Get(KeyArgs),
    /// List the profile's devices.
    #[command(alias = "ls")]
    List(NameArgs),
    /// Remove profile devices: PROFILE DEVICE...
    #[command(alias = "rm")]
    Remove(RemoveArgs),
    /// Set device keys: PROFILE DEVICE key=value...
    Set(SetArgs),
    /// Show the profile's devices as YAML.
    Show(NameArgs),
    /// Unset a device key: PROFILE DEVICE KEY.
    Unset(KeyArgs),
}

/// What owns the devices.
#[derive(Clone, Copy, PartialEq)]
pub enum Owner {
    Instance,
    Profile,
}

impl Owner {
    fn url(self, name: &str) -> String {
        match self {
            Owner::Instance => format!("/1.0/instances/{}", encode(name)),
            Owner::Profile => format!("/1.0/profiles/{}", encode(name)),
        }
    }

    /// The object's writable part (what lxc's `Writable()` sends back).
    fn writable(self, v: &Value) -> Value {
        match self {
            Owner::Instance => instance_writable(v),
            Owner::Profile => json!({
                "config": v["config"], "description": v["description"], "devices": v["devices"],
            }),
        }
    }

    fn put(self, c: &Client, name: &str, body: &Value) -> Result<()> {
        match self {
            // An instance update is an operation: its end is waited for.
            Owner::Instance => c.run("PUT", &self.url(name), Some(body)).map(|_| ()),
            Owner::Profile => c.request("PUT", &self.url(name), Some(body)).map(|_| ()),
        }
    }
}

/// lxc's `instanceDeviceAdd` / `profileDeviceAdd`: adds `dev` as `device` of `name`.
pub fn add_device(c: &Client, o: Owner, name: &str, device: &str, dev: Value) -> Result<()> {
    let v = c.get(&o.url(name))?;
    if has(&v, "devices", device) {
        bail!("Device already exists: {device}");
    }
    let mut put = o.writable(&v);
    put["devices"][device] = dev;
    o.put(c, name, &put)
}

/// The detach of lxc's `network detach` and `storage volume detach`: removes `device`, or
/// else the one device that `matches`; `none` is the error when no device matches.
pub fn detach(
    c: &Client,
    o: Owner,
    name: &str,
    device: Option<&str>,
    matches: impl Fn(&Value) -> bool,
    none: &str,
) -> Result<()> {
    let v = c.get(&o.url(name))?;
    let mut found = device.map(str::to_string);
    if found.is_none() {
        for (n, d) in v["devices"].as_object().into_iter().flatten() {
            if matches(d) {
                if found.is_some() {
                    bail!("More than one device matches, specify the device name");
                }
                found = Some(n.clone());
            }
        }
    }
    let Some(device) = found else {
        bail!("{none}");
    };
    let mut put = o.writable(&v);
    if put["devices"]
        .as_object_mut()
        .and_then(|d| d.remove(&device))
        .is_none()
    {
        bail!("The specified device doesn't exist");
    }
    o.put(c, name, &put)
}

/// An instance's writable part, as `api.Instance.Writable()`.
pub fn instance_writable(v: &Value) -> Value {
    json!({
        "architecture": v["architecture"], "config": v["config"], "devices": v["devices"],
        "ephemeral": v["ephemeral"], "profiles": v["profiles"],
        "stateful": v["stateful"].as_bool().unwrap_or(false), "description": v["description"],
    })
}

pub fn run_instance(c: &Client, cmd: InstanceDeviceCmd) -> Result<()> {
    let o = Owner::Instance;
    // `[REMOTE:]INSTANCE`: the client of its remote, the name without the prefix.
    let on = |name: &mut String| -> Result<Client> {
        let (c, n) = super::remote::split(c, name)?;
        *name = n;
        Ok(c)
    };
    match cmd {
        InstanceDeviceCmd::Add(mut a) => add(&on(&mut a.name)?, o, &a),
        InstanceDeviceCmd::Get(mut a) => get(&on(&mut a.name)?, o, &a),
        InstanceDeviceCmd::List(mut a) => list(&on(&mut a.name)?, o, &a.name),
        InstanceDeviceCmd::Override(mut a) => override_device(&on(&mut a.name)?, &a),
        InstanceDeviceCmd::Remove(mut a) => remove(&on(&mut a.name)?, o, &a),
        InstanceDeviceCmd::Set(mut a) => set(
            &on(&mut a.name)?,
            o,
            &a.name,
            &a.device,
            &get_config(&a.props)?,
        ),
        InstanceDeviceCmd::Show(mut a) => show(&on(&mut a.name)?, o, &a.name),
        InstanceDeviceCmd::Unset(mut a) => unset(&on(&mut a.name)?, o, &a),
    }
}

pub fn run_profile(c: &Client, cmd: ProfileDeviceCmd) -> Result<()> {
    let o = Owner::Profile;
    match cmd {
        ProfileDeviceCmd::Add(a) => add(c, o, &a),
        ProfileDeviceCmd::Get(a) => get(c, o, &a),
        ProfileDeviceCmd::List(a) => list(c, o, &a.name),
        ProfileDeviceCmd::Remove(a) => remove(c, o, &a),
        ProfileDeviceCmd::Set(a) => set(c, o, &a.name, &a.device, &get_config(&a.props)?),
        ProfileDeviceCmd::Show(a) => show(c, o, &a.name),
        ProfileDeviceCmd::Unset(a) => unset(c, o, &a),
    }
}

/// lxc's `getConfig`: one `key value`, or `key=value...`.
pub fn get_config(args: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    if args.len() == 2 && !args[0].contains('=') {
        m.insert(args[0].clone(), args[1].clone().into());
        return Ok(m);
    }
    for arg in args {
        let Some((k, v)) = arg.split_once('=') else {
            bail!("Invalid key=value configuration: {arg}")
        };
        m.insert(k.into(), v.into());
    }
    Ok(m)
}

/// `key=value` device options, with lxc's error for a bare word.
fn device_props(args: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for prop in args {
        let Some((k, v)) = prop.split_once('=') else {
            bail!("No value found in {prop:?}")
        };
        m.insert(k.into(), v.into());
    }
    Ok(m)
}

fn has(v: &Value, field: &str, device: &str) -> bool {
    v[field].get(device).is_some()
}

fn add(c: &Client, o: Owner, a: &AddArgs) -> Result<()> {
    let mut dev = device_props(&a.props)?;
    dev.insert("type".into(), a.kind.clone().into());
    let v = c.get(&o.url(&a.name))?;
    if has(&v, "devices", &a.device) {
        bail!("The device already exists");
    }
    let mut put = o.writable(&v);
    put["devices"][&a.device] = Value::Object(dev);
    o.put(c, &a.name, &put)?;
    println!("Device {} added to {}", a.device, a.name);
    Ok(())
}

fn get(c: &Client, o: Owner, a: &KeyArgs) -> Result<()> {
    let v = c.get(&o.url(&a.name))?;
    let Some(dev) = v["devices"].get(&a.device) else {
        if o == Owner::Instance && has(&v, "expanded_devices", &a.device) {
            bail!("Device from profile(s) cannot be retrieved for individual instance");
        }
        bail!("Device doesn't exist");
    };
    println!("{}", dev[&a.key].as_str().unwrap_or(""));
    Ok(())
}

/// The device names, sorted (lxc prints Go's map order, which is random).
fn list(c: &Client, o: Owner, name: &str) -> Result<()> {
    let v = c.get(&o.url(name))?;
    let mut names: Vec<&String> = v["devices"]
        .as_object()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    names.sort();
    println!(
        "{}",
        names
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

fn show(c: &Client, o: Owner, name: &str) -> Result<()> {
    let v = c.get(&o.url(name))?;
    // lxc prints a nil map as `{}`.
    print!(
        "{}",
        lxc_format::to_yaml(&lxc_format::decode_devices(&v["devices"]))
    );
    Ok(())
}

fn override_device(c: &Client, a: &OverrideArgs) -> Result<()> {
    let o = Owner::Instance;
    let v = c.get(&o.url(&a.name))?;
    if has(&v, "devices", &a.device) {
        bail!("The device already exists");
    }
    let Some(Value::Object(mut dev)) = v["expanded_devices"].get(&a.device).cloned() else {
        bail!("The profile device doesn't exist");
    };
    dev.extend(device_props(&a.props)?);
    let mut put = o.writable(&v);
    put["devices"][&a.device] = Value::Object(dev);
    o.put(c, &a.name, &put)?;
    println!("Device {} overridden for {}", a.device, a.name);
    Ok(())
}

fn remove(c: &Client, o: Owner, a: &RemoveArgs) -> Result<()> {
    let v = c.get(&o.url(&a.name))?;
    let mut put = o.writable(&v);
    for device in &a.devices {
        let removed = put["devices"]
            .as_object_mut()
            .and_then(|d| d.remove(device));
        if removed.is_none() {
            if o == Owner::Instance && has(&v, "expanded_devices", device) {
                bail!("Device from profile(s) cannot be removed from individual instance. Override device or modify profile instead");
            }
            bail!("Device doesn't exist");
        }
    }
    o.put(c, &a.name, &put)?;
    println!("Device {} removed from {}", a.devices.join(", "), a.name);
    Ok(())
}

/// Sets keys of a device the object has itself (a profile's device is overridden first,
/// with `config device override`, as lxc requires).
fn set(c: &Client, o: Owner, name: &str, device: &str, keys: &Map<String, Value>) -> Result<()> {
    let v = c.get(&o.url(name))?;
    let mut put = o.writable(&v);
    let Some(Value::Object(dev)) = put["devices"].get_mut(device) else {
        if o == Owner::Instance && has(&v, "expanded_devices", device) {
            bail!("Device from profile(s) cannot be modified for individual instance. Override device or modify profile instead");
        }
        bail!("Device doesn't exist");
    };
    for (k, val) in keys {
        dev.insert(k.clone(), val.clone());
    }
    o.put(c, name, &put)
}

/// Unsets a device key. lxc sets it to "" (which LXD does not store); the key is dropped
/// here, which leaves what LXD would store.
fn unset(c: &Client, o: Owner, a: &KeyArgs) -> Result<()> {
    let v = c.get(&o.url(&a.name))?;
    let mut put = o.writable(&v);
    let Some(Value::Object(dev)) = put["devices"].get_mut(&a.device) else {
        if o == Owner::Instance && has(&v, "expanded_devices", &a.device) {
            bail!("Device from profile(s) cannot be modified for individual instance. Override device or modify profile instead");
        }
        bail!("Device doesn't exist");
    };
    dev.remove(&a.key);
    o.put(c, &a.name, &put)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn key_values_parse_as_lxc_parses_them() {
        let m = get_config(&strings(&["size", "20MiB"])).unwrap();
        assert_eq!(m["size"], "20MiB");
        let m = get_config(&strings(&["a=1", "b=x=y"])).unwrap();
        assert_eq!((m["a"].as_str(), m["b"].as_str()), (Some("1"), Some("x=y")));
        let e = get_config(&strings(&["a=1", "b", "2"])).unwrap_err();
        assert_eq!(e.to_string(), "Invalid key=value configuration: b");
        let e = device_props(&strings(&["path"])).unwrap_err();
        assert_eq!(e.to_string(), "No value found in \"path\"");
    }
}
