//! Files inside an instance (`/1.0/instances/<name>/files`): read, listed, pushed and
//! deleted through the tree that holds each path ([`root`]), every syscall on a blocking
//! thread, since the tree is the container's and none of it may hold an async worker.
//! Contents travel as streams: a download is read by one blocking reader, an upload
//! written by one blocking writer, each fed through a small channel (a thread hop per
//! chunk, what tokio::fs does, costs more than the read or write itself).

mod root;

use std::io::{Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::revert::Revert;
use super::{blocking, Engine};
use crate::error::{DaemonError, Result};
pub(crate) use root::open_in_root;
use root::InstanceRoot;
pub use root::{FileInfo, FileKind};

/// Owner and mode of what a push creates (applied only to what is new, as LXD does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileAttrs {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits; a default per kind when unset.
    pub mode: Option<u32>,
}

/// What a read of a path yields besides its [`FileInfo`].
#[derive(Debug)]
pub enum FileContent {
    /// Nothing (a HEAD request).
    Headers,
    /// A directory's names, sorted.
    Listing(Vec<String>),
    /// A symlink's target, resolved inside the instance.
    Target(String),
    /// A regular file's bytes, and how many there are.
    File { stream: FileStream, len: u64 },
}

/// What a read opened on its blocking thread: a file is streamed once back on the runtime.
enum Opened {
    File(std::fs::File, u64),
    Other(FileContent),
}

/// A file's bytes in chunks of up to 1 MiB, read on a blocking thread as they are taken.
#[derive(Debug)]
pub struct FileStream {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

impl FileStream {
    /// Streams `file` from its current offset to its end.
    pub(crate) fn new(file: std::fs::File) -> Self {
        let (tx, rx) = mpsc::channel(8);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(buf)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
        FileStream { rx }
    }
}

impl futures_util::Stream for FileStream {
    type Item = std::io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// What the uploader sends its writer.
enum Chunk<C> {
    Data(C),
    /// The upload is whole: what was written stays.
    End,
}

/// A file being pushed: chunks go to its writer, then [`finish`](Self::finish) keeps it,
/// or [`abort`](Self::abort) (or a drop) gives it up, removing a file the push created.
#[derive(Debug)]
pub struct Upload<C> {
    tx: mpsc::Sender<Chunk<C>>,
    writer: tokio::task::JoinHandle<Result<()>>,
    engine: Engine,
    name: String,
    path: String,
}

impl<C: AsRef<[u8]> + Send + 'static> Upload<C> {
    /// Queues a chunk for the writer. Once the writer has failed (a full pool) chunks are
    /// dropped: the caller reads the rest of its input, so that a client still sending
    /// gets the error from [`finish`](Self::finish) rather than a broken pipe.
    pub async fn write(&self, chunk: C) {
        if !self.tx.is_closed() {
            let _ = self.tx.send(Chunk::Data(chunk)).await;
        }
    }

    /// Ends the upload: the file is kept, or, when the writer failed, its error comes back
    /// (and a file the push created is gone).
    pub async fn finish(self) -> Result<()> {
        let _ = self.tx.send(Chunk::End).await;
        drop(self.tx);
        self.writer.await??;
        self.engine.file_pushed(&self.name, &self.path);
        Ok(())
    }

    /// Gives the upload up (its input broke): a file the push created is removed. The
    /// writer's own error, if it failed first, comes back.
    pub async fn abort(self) -> Result<()> {
        drop(self.tx);
        self.writer.await?
    }
}

impl Engine {
    /// Runs `f` on the tree holding `path` of instance `name` and the path within it, on a
    /// blocking thread.
    async fn in_root<T: Send + 'static>(
        &self,
        name: &str,
        path: &str,
        f: impl FnOnce(InstanceRoot, String) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (d, name, path) = (self.d.clone(), name.to_string(), path.to_string());
        blocking(move || {
            let (root, path) = InstanceRoot::open(&d, &name, &path)?;
            f(root, path)
        })
        .await
    }

    fn file_pushed(&self, name: &str, path: &str) {
        self.d.events.lifecycle(
            "instance-file-pushed",
            &format!("/1.0/instances/{name}"),
            serde_json::json!({"file-path": path}),
        );
    }

    /// `GET` (or, with `head`, `HEAD`) of `path` in instance `name`: kind, owner and mode,
    /// and the content (a listing, a symlink's target or a file's bytes). FIFOs, sockets
    /// and device nodes are refused before they are opened.
    pub async fn file(
        &self,
        name: &str,
        path: &str,
        head: bool,
    ) -> Result<(FileInfo, FileContent)> {
        let (info, opened) = self
            .in_root(name, path, move |root, path| {
                let info = root.stat(&path)?;
                let opened = match (info.kind, head) {
                    (_, true) => Opened::Other(FileContent::Headers),
                    (FileKind::Directory, false) => {
                        Opened::Other(FileContent::Listing(root.list(&path)?))
                    }
                    (FileKind::Symlink, false) => {
                        Opened::Other(FileContent::Target(root.read_link(&path)?))
                    }
                    (FileKind::File, false) => {
                        let file = root.read(&path)?;
                        let len = file
                            .metadata()
                            .map_err(|e| DaemonError::io("stat", &path, e))?
                            .len();
                        Opened::File(file, len)
                    }
                };
                Ok((info, opened))
            })
            .await?;
        // The reader starts here, on the runtime, once the file is open.
        let content = match opened {
            Opened::File(file, len) => FileContent::File {
                stream: FileStream::new(file),
                len,
            },
            Opened::Other(content) => content,
        };
        Ok((info, content))
    }

    /// Pushes a regular file: created with `attrs` (mode 0644 by default) when new,
    /// truncated, or appended to with `append`, when it exists. Its content is then
    /// written through the [`Upload`].
    pub async fn create_file<C: AsRef<[u8]> + Send + 'static>(
        &self,
        name: &str,
        path: &str,
        attrs: FileAttrs,
        append: bool,
    ) -> Result<Upload<C>> {
        let (root, inner, file, created) = self
            .in_root(name, path, move |root, path| {
                let (file, created) = root.open_write(
                    &path,
                    attrs.uid,
                    attrs.gid,
                    attrs.mode.unwrap_or(0o644),
                    append,
                )?;
                Ok((root, path, file, created))
            })
            .await?;
        let (tx, mut rx) = mpsc::channel::<Chunk<C>>(16);
        let writer = tokio::task::spawn_blocking(move || -> Result<()> {
            let mut file = file;
            // A new file that is not written whole (a full pool, a broken upload) is
            // removed rather than left half-written, taking the space it held.
            let mut revert = Revert::new();
            if created {
                let inner = inner.clone();
                revert.add(move || {
                    let _ = root.remove(&inner);
                });
            }
            while let Some(chunk) = rx.blocking_recv() {
                match chunk {
                    Chunk::Data(data) => file
                        .write_all(data.as_ref())
                        .map_err(|e| DaemonError::io("write", &inner, e))?,
                    Chunk::End => {
                        revert.success();
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        Ok(Upload {
            tx,
            writer,
            engine: self.clone(),
            name: name.to_string(),
            path: path.to_string(),
        })
    }

    /// Pushes a directory (mode 0750 by default); an existing one is fine.
    pub async fn create_directory(&self, name: &str, path: &str, attrs: FileAttrs) -> Result<()> {
        self.in_root(name, path, move |root, path| {
            root.mkdir(&path, attrs.uid, attrs.gid, attrs.mode.unwrap_or(0o750))
        })
        .await?;
        self.file_pushed(name, path);
        Ok(())
    }

    /// Pushes a symlink to `target`; an identical existing one is fine.
    pub async fn create_symlink(
        &self,
        name: &str,
        path: &str,
        target: String,
        attrs: FileAttrs,
    ) -> Result<()> {
        self.in_root(name, path, move |root, path| {
            root.symlink(&path, &target, attrs.uid, attrs.gid)
        })
        .await?;
        self.file_pushed(name, path);
        Ok(())
    }

    /// Deletes a file, a symlink, an empty directory, or a FIFO, socket or device node.
    pub async fn delete_file(&self, name: &str, path: &str) -> Result<()> {
        self.in_root(name, path, |root, path| root.remove(&path))
            .await
    }
}

/// Test fixtures of the I/O routes: a stopped instance without an image or a pool driver.
#[cfg(test)]
impl Engine {
    /// Records a stopped instance `name` on the default pool, with an empty root
    /// filesystem owned by the caller, and returns that root.
    pub(crate) fn add_stopped_instance(&self, name: &str) -> std::path::PathBuf {
        self.d
            .db
            .insert_instance(&crate::db::instances::InstanceRow {
                name: name.into(),
                kind: "container".into(),
                architecture: "x86_64".into(),
                ephemeral: false,
                stateful: false,
                description: String::new(),
                created_at: crate::now(),
                last_used_at: crate::now(),
                config: Default::default(),
                devices: Default::default(),
                profiles: vec!["default".into()],
                state: "ready".into(),
                pool: "default".into(),
            })
            .expect("instance row");
        let root = self.d.instance_volume(name).expect("volume").join("rootfs");
        std::fs::create_dir_all(&root).expect("root filesystem");
        root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> FileAttrs {
        FileAttrs {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            mode: None,
        }
    }

    #[tokio::test]
    async fn an_upload_keeps_its_file_only_when_whole() {
        let api = crate::api::testing::TestApi::new().await;
        let e = &api.engine;
        let root = e.add_stopped_instance("c1");
        let up = e.create_file("c1", "/new", me(), false).await.unwrap();
        up.write(b"half".to_vec()).await;
        up.abort().await.unwrap();
        assert!(!root.join("new").exists(), "a broken new file is removed");

        std::fs::write(root.join("old"), b"before").unwrap();
        let up = e.create_file("c1", "/old", me(), true).await.unwrap();
        up.write(b"+half".to_vec()).await;
        up.abort().await.unwrap();
        assert!(root.join("old").exists(), "a file that was there stays");

        let up = e.create_file("c1", "/new", me(), false).await.unwrap();
        up.write(b"whole".to_vec()).await;
        drop(up);
        // A dropped upload is given up too (its writer ends when the channel closes).
        for _ in 0..100 {
            if !root.join("new").exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!root.join("new").exists());

        let up = e.create_file("c1", "/new", me(), false).await.unwrap();
        for part in [b"wh".to_vec(), b"ole".to_vec()] {
            up.write(part).await;
        }
        up.finish().await.unwrap();
        assert_eq!(std::fs::read(root.join("new")).unwrap(), b"whole");
        let (info, content) = e.file("c1", "/new", false).await.unwrap();
        assert_eq!((info.kind, info.mode), (FileKind::File, 0o644));
        let FileContent::File { stream, len } = content else {
            panic!("a file's content");
        };
        let chunks: Vec<_> = futures_util::StreamExt::collect(stream).await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap()).collect();
        assert_eq!((bytes.as_slice(), len), (&b"whole"[..], 5));
    }
}
