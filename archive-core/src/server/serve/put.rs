//! A put on the serve loop: store it, record the copy owed to the peer
//! (durably, before the client hears "stored"), answer, then forward it
//! (now, or in the background when the client asked so).

use tokio::io::{AsyncRead, AsyncWrite};

use crate::common::error::{Error, Result};
use crate::common::log;
use crate::net::wire::{self, ForwardOutcome, PutRequest, Reply, StoreOutcome, MAX_FILE_SIZE};
use crate::server::owed::OwedList;

use super::forward::ForwardJob;
use super::Server;

impl Server {
    /// Serves one put whose content follows on `input`. An error ends the
    /// loop: the channel is unusable (a protocol error) or the client left.
    pub(super) async fn put<R, W>(
        &mut self,
        req: PutRequest,
        input: &mut R,
        output: &mut W,
    ) -> Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let t = self.cfg.io_timeout();
        if req.size > MAX_FILE_SIZE {
            // Its content is not read: what follows on this channel is no
            // longer a request, so the channel ends here.
            let e = Error::Refused(format!(
                "{}: declared size {} is larger than any WAL file",
                req.name, req.size
            ));
            log::error(format!("put {} into {}: {e}", req.name, req.dir));
            wire::write_frame(output, &Reply::from_error(&e), t).await?;
            return Err(Error::Protocol(
                "the channel is closed after a put whose content was not read".into(),
            ));
        }
        let stored = match self.store.put(&req, input).await {
            Ok(s) => s,
            Err(e) => {
                log::error(format!("put {} into {}: {e}", req.name, req.dir));
                wire::write_frame(output, &Reply::from_error(&e), t).await?;
                if matches!(e, Error::Protocol(_)) {
                    return Err(e);
                }
                return Ok(());
            }
        };
        // The owed marker is durable before the client hears "stored", so
        // no crash can forget the peer's copy.
        let peer = req.forward_to.as_deref().filter(|p| self.forwards_to(p));
        let dir = stored.path.parent().expect("file in a dir").to_path_buf();
        if let Some(sender) = req.from.as_deref().filter(|p| self.forwards_to(p)) {
            self.note_sender(&dir, &req, sender);
        }
        // Held until the forward ends, so concurrent puts' owed deliveries
        // do not send this file a second time.
        let mut claim = None;
        if let Some(peer) = peer {
            match OwedList::new(&dir, peer).add(&req.name) {
                Ok(f) => claim = Some(f),
                Err(e) => {
                    return wire::write_frame(output, &Reply::from_error(&e), t).await;
                }
            }
        }
        let reply = Reply::Stored {
            outcome: stored.outcome,
            codec: stored.codec.name().to_string(),
            stored_size: stored.stored_size,
        };
        wire::write_frame(output, &reply, t).await?;
        log::info(format!(
            "stored {} in {} ({}, {} bytes{})",
            req.name,
            dir.display(),
            stored.codec.name(),
            stored.stored_size,
            if stored.outcome == StoreOutcome::AlreadyStored {
                ", already there"
            } else {
                ""
            }
        ));
        let (Some(peer), Some(claim)) = (peer, claim) else {
            if let Some(p) = req
                .forward_to
                .as_ref()
                .filter(|_| !req.forward_in_background)
            {
                let reply = Reply::Forward(ForwardOutcome::Owed {
                    reason: format!("{p} is this server; not forwarded"),
                });
                wire::write_frame(output, &reply, t).await?;
            }
            return Ok(());
        };
        let job = ForwardJob {
            peer: peer.to_string(),
            dir,
            req,
            _claim: claim,
        };
        if job.req.forward_in_background {
            self.forward_in_background(job);
            return Ok(());
        }
        let outcome = self
            .fwd
            .lock()
            .await
            .forward_and_deliver(&job, || true)
            .await;
        // The client may have left already: that is fine.
        let _ = wire::write_frame(output, &Reply::Forward(outcome), t).await;
        Ok(())
    }
}
