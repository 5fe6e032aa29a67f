//! EOF / CLOSE bookkeeping of one channel (RFC 4254 §5.3).
//!
//! Why a separate value: the close handshake is where races live (both sides close at
//! once, data crossing a CLOSE), and a channel number may only be reused once both
//! CLOSEs have happened; keeping the four facts in one place makes that checkable.

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChannelState {
    eof_sent: bool,
    eof_received: bool,
    close_sent: bool,
    close_received: bool,
}

impl ChannelState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn eof_sent(&self) -> bool {
        self.eof_sent
    }
    pub fn eof_received(&self) -> bool {
        self.eof_received
    }
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Whether we may still send CHANNEL_DATA (not after our EOF or CLOSE).
    pub fn may_send_data(&self) -> bool {
        !self.eof_sent && !self.close_sent
    }

    /// Records our EOF; returns whether it should actually be sent (once, and never
    /// after our CLOSE).
    pub fn send_eof(&mut self) -> bool {
        if self.eof_sent || self.close_sent {
            return false;
        }
        self.eof_sent = true;
        true
    }

    /// Records our CLOSE; returns whether it should actually be sent (once).
    pub fn send_close(&mut self) -> bool {
        if self.close_sent {
            return false;
        }
        self.close_sent = true;
        true
    }

    /// CHANNEL_DATA / EXTENDED_DATA arrived. After the peer's EOF or CLOSE it is a
    /// protocol error: the peer said it would send no more, and accepting it would let
    /// data reach an application that has already seen end-of-stream.
    pub fn on_data(&self) -> Result<()> {
        if self.close_received {
            return Err(Error::Protocol("channel data after CLOSE".into()));
        }
        if self.eof_received {
            return Err(Error::Protocol("channel data after EOF".into()));
        }
        Ok(())
    }

    /// CHANNEL_EOF arrived; a second one, or one after CLOSE, is a protocol error.
    pub fn on_eof(&mut self) -> Result<()> {
        if self.close_received {
            return Err(Error::Protocol("channel EOF after CLOSE".into()));
        }
        if self.eof_received {
            return Err(Error::Protocol("duplicate channel EOF".into()));
        }
        self.eof_received = true;
        Ok(())
    }

    /// CHANNEL_CLOSE arrived. Returns whether we must now send our own CLOSE (RFC 4254
    /// §5.3: "MUST send back ... unless it has already sent this message"). A second
    /// CLOSE is a protocol error: the channel number may already have been reused.
    pub fn on_close(&mut self) -> Result<bool> {
        if self.close_received {
            return Err(Error::Protocol("duplicate channel CLOSE".into()));
        }
        self.close_received = true;
        Ok(!self.close_sent)
    }

    /// Both CLOSEs have happened: the local channel id may be reused and the channel's
    /// window released.
    pub fn is_closed(&self) -> bool {
        self.close_sent && self.close_received
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn we_close_first() {
        let mut s = ChannelState::new();
        assert!(s.send_eof());
        assert!(!s.send_eof(), "EOF is sent once");
        assert!(!s.may_send_data());
        assert!(s.send_close());
        assert!(!s.is_closed(), "id stays reserved until the peer's CLOSE");
        s.on_data().unwrap(); // data crossing our CLOSE is still legal
        assert!(!s.on_close().unwrap(), "no second CLOSE from us");
        assert!(s.is_closed());
        assert!(s.on_close().is_err());
    }

    #[test]
    fn peer_closes_first_and_crossing_closes() {
        let mut s = ChannelState::new();
        s.on_eof().unwrap();
        assert!(s.on_data().is_err());
        assert!(s.on_eof().is_err());
        assert!(s.may_send_data(), "EOF is half-close: we may still send");
        assert!(s.on_close().unwrap(), "we must answer CLOSE");
        assert!(!s.is_closed());
        assert!(s.send_close());
        assert!(s.is_closed());
        assert!(!s.send_eof(), "no EOF after CLOSE");

        // Both sides close at once: each CLOSE answers the other.
        let mut s = ChannelState::new();
        assert!(s.send_close());
        assert!(!s.on_close().unwrap());
        assert!(s.is_closed());
        assert!(s.on_data().is_err());
        assert!(s.on_eof().is_err());
    }
}
