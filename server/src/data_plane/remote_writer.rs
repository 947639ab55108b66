//! A [`PartWriter`] for a disk on another node: part bytes are cut into chunks and streamed to
//! that node's data server by a task, while the encoder goes on (at most a few chunks queued,
//! so memory stays bounded). A chunk whose request fails is sent again from where the server
//! says it stands; a part that cannot be finished fails like a local one, and the ingest
//! goes on if its write quorum still holds.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::client::{DataClient, DataError};
use super::wire::{NewUpload, CHUNK};
use wormfs_parts::ids::NodeId;
use wormfs_parts::part_format::PartHeader;
use wormfs_parts::part_io::PartWriter;

/// Chunks queued per part beyond the one being sent.
const QUEUED_CHUNKS: usize = 3;

enum Msg {
    Chunk(Bytes),
    Finish(PartHeader, oneshot::Sender<Result<(), DataError>>),
}

/// A part being written on another node.
pub struct RemotePartWriter {
    node: NodeId,
    tx: Option<mpsc::Sender<Msg>>,
    buf: BytesMut,
    failure: Arc<Mutex<Option<DataError>>>,
}

impl RemotePartWriter {
    /// Starts the part on `node` (which checks its disk's identity and space first).
    pub async fn create(
        client: Arc<DataClient>,
        node: NodeId,
        req: NewUpload,
    ) -> Result<Self, DataError> {
        let upload = client.create_upload(node, &req).await?;
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        let failure = Arc::new(Mutex::new(None));
        let span = tracing::debug_span!("part_upload", node, upload, file = %req.file_id, segment = req.segment, part = req.part);
        tokio::spawn(tracing::Instrument::instrument(
            pump(client, node, upload, rx, failure.clone()),
            span,
        ));
        Ok(Self {
            node,
            tx: Some(tx),
            buf: BytesMut::with_capacity(CHUNK),
            failure,
        })
    }

    fn failed(&self) -> anyhow::Error {
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            Some(e) => e.into(),
            None => anyhow::anyhow!("the upload to node {} stopped", self.node),
        }
    }

    fn send(&mut self, msg: Msg) -> anyhow::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("part already closed"))?;
        tx.blocking_send(msg).map_err(|_| self.failed())
    }
}

async fn pump(
    client: Arc<DataClient>,
    node: NodeId,
    upload: u64,
    mut rx: mpsc::Receiver<Msg>,
    failure: Arc<Mutex<Option<DataError>>>,
) {
    let mut offset = 0u64;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Chunk(chunk) => match client.put_chunk(node, upload, offset, chunk).await {
                Ok(o) => offset = o,
                Err(e) => {
                    tracing::warn!("part upload failed: {e}");
                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    client.abort_upload(node, upload).await;
                    return;
                }
            },
            Msg::Finish(header, reply) => {
                let r = client.finish_upload(node, upload, &header).await;
                if r.is_err() {
                    client.abort_upload(node, upload).await;
                }
                let _ = reply.send(r);
                return;
            }
        }
    }
    // The writer was dropped or aborted without finishing.
    client.abort_upload(node, upload).await;
}

impl PartWriter for RemotePartWriter {
    fn write(&mut self, mut data: &[u8]) -> anyhow::Result<()> {
        while !data.is_empty() {
            let take = data.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK {
                let chunk = self.buf.split().freeze();
                self.buf.reserve(CHUNK);
                self.send(Msg::Chunk(chunk))?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, header: PartHeader) -> anyhow::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Msg::Chunk(chunk))?;
        }
        let (reply, answer) = oneshot::channel();
        self.send(Msg::Finish(header, reply))?;
        self.tx.take();
        match answer.blocking_recv() {
            Ok(r) => r.map_err(Into::into),
            Err(_) => Err(self.failed()),
        }
    }

    fn abort(mut self: Box<Self>) {
        // The pump sees the channel close and discards the upload.
        self.tx.take();
    }
}
