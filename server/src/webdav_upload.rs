//! A WebDAV upload: the body streams through a bounded channel into the ingest pipeline, which
//! runs in its own task. The ingest sees a clean end of its input only after
//! [`WriteFile::commit`]; if the upload is dropped first (the client went away, or the body was
//! short) the input ends in an error, so the ingest fails, drops its intent and deletes its
//! parts: nothing becomes visible and nothing is left behind.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wormfs_webdav::{BackendError, BoxFut, Entry, WriteFile};

use crate::ingest::{IngestRequest, IngestResult};
use crate::store::{Store, StoreError};
use crate::webdav_backend::{entry_of, store_err};
use wormfs_parts::tree_path::TreePath;

/// Frames of the body buffered between the connection and the encoder.
const CHANNEL_FRAMES: usize = 64;

/// The ingest's input: the frames sent by the upload, ending cleanly only once committed.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    committed: Arc<AtomicBool>,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(buf.remaining());
                buf.put_slice(&self.cur.split_to(n));
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(b)) => self.cur = b,
                Poll::Ready(None) if self.committed.load(Ordering::Acquire) => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload was cut off before its end",
                    )))
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A file being uploaded.
pub(crate) struct Upload {
    store: Arc<Store>,
    tx: Option<mpsc::Sender<Bytes>>,
    committed: Arc<AtomicBool>,
    task: Option<JoinHandle<Result<IngestResult, StoreError>>>,
    written: u64,
}

impl Upload {
    /// Starts the ingest of `req`, fed by the writes that follow.
    pub(crate) fn start(store: Arc<Store>, req: IngestRequest) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_FRAMES);
        let committed = Arc::new(AtomicBool::new(false));
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
            committed: committed.clone(),
        };
        let s = store.clone();
        // Its own task: the ingest finishes (or cleans up) even if the connection is dropped.
        let task = tokio::spawn(async move { s.ingest(req, reader).await });
        Self {
            store,
            tx: Some(tx),
            committed,
            task: Some(task),
            written: 0,
        }
    }

    async fn outcome(&mut self) -> Result<IngestResult, BackendError> {
        let task = self
            .task
            .take()
            .ok_or_else(|| BackendError::Other("upload already finished".into()))?;
        match task.await {
            Ok(r) => r.map_err(|e| store_err(e, true)),
            Err(e) => Err(BackendError::Other(format!("ingest task: {e}"))),
        }
    }
}

impl WriteFile for Upload {
    fn write(&mut self, data: Bytes) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let n = data.len() as u64;
            let sent = match &self.tx {
                Some(tx) => tx.send(data).await.is_ok(),
                None => false,
            };
            if !sent {
                // The ingest stopped early: report why.
                self.tx = None;
                return match self.outcome().await {
                    Err(e) => Err(e),
                    Ok(_) => Err(BackendError::Other("the ingest ended early".into())),
                };
            }
            self.written += n;
            Ok(())
        })
    }

    fn commit(&mut self) -> BoxFut<'_, Entry> {
        Box::pin(async move {
            self.committed.store(true, Ordering::Release);
            self.tx = None;
            let res = self.outcome().await?;
            let path =
                TreePath::parse(&res.path).map_err(|e| BackendError::Other(e.to_string()))?;
            // The entry as the commit stored it: reading it back was a statement per PUT.
            if let Some(c) = res.committed {
                return Ok(Entry {
                    name: path.name().unwrap_or_default().to_owned(),
                    is_dir: false,
                    size: res.size,
                    mtime_ms: c.mtime_ms,
                    etag: Some(c.etag),
                });
            }
            match self.store.meta.lookup(&path).await {
                Ok(Some(d)) => Ok(entry_of(d)),
                Ok(None) => Err(BackendError::NotFound),
                Err(e) => Err(BackendError::Other(format!("metadata: {e}"))),
            }
        })
    }

    fn written(&self) -> u64 {
        self.written
    }
}
