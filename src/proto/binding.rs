//! Binding (RFC 8489 §7.3): XOR-MAPPED-ADDRESS of the request's source, over every transport,
//! without authentication. With RFC 5780 addresses configured ([`super::rfc5780`]), UDP
//! requests may carry CHANGE-REQUEST and answers carry OTHER-ADDRESS and RESPONSE-ORIGIN.

use super::Transport;
use super::core::{Core, Request};
use super::error::TurnError;
use super::message::unknown_required;
use super::reply::Reply;
use super::resources::RelayResources;
use super::rfc5780::{CHANGE_REQUEST, ChangeRequest, OTHER_ADDRESS, RESPONSE_ORIGIN};
use std::net::SocketAddr;
use stun_types::attribute::{AttributeType, MappedSocketAddr, XorMappedAddress};

impl<R: RelayResources> Core<R> {
    /// The answer to a Binding request and the server address it leaves from.
    pub(crate) fn binding(
        &mut self,
        req: &Request<'_, '_>,
    ) -> (Result<Reply, TurnError>, SocketAddr) {
        let ft = req.ft;
        let rfc5780 = self.cfg.rfc5780.filter(|_| ft.transport == Transport::Udp);
        let also_known: &[u16] = if rfc5780.is_some() {
            &[CHANGE_REQUEST]
        } else {
            &[]
        };
        if let Err(e) = unknown_required(req.msg, also_known) {
            return (Err(e), ft.server);
        }
        let mut r = Reply::success(req.msg);
        r.add(&XorMappedAddress::new(ft.client, req.msg.transaction_id()));
        let mut from = ft.server;
        if let Some(five) = rfc5780 {
            let change = match req.msg.raw_attribute(AttributeType::new(CHANGE_REQUEST)) {
                None => ChangeRequest::default(),
                Some(raw) => match ChangeRequest::parse(&raw.value) {
                    Some(c) => c,
                    None => return (Err(TurnError::BadRequest("CHANGE-REQUEST")), ft.server),
                },
            };
            let all = ChangeRequest {
                ip: true,
                port: true,
            };
            if let (Some(src), Some(other)) =
                (five.flip(ft.server, change), five.flip(ft.server, all))
            {
                from = src;
                r.add(&MappedSocketAddr::new(other).to_raw(AttributeType::new(OTHER_ADDRESS)));
                r.add(&MappedSocketAddr::new(src).to_raw(AttributeType::new(RESPONSE_ORIGIN)));
            }
        }
        self.stats.bindings += 1;
        (Ok(r), from)
    }
}
