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

#[cfg(test)]
mod tests {
    use crate::proto::test_support::{client, code, core, request};
    use crate::testing::FakeRelays;
    use std::time::Instant;
    use stun_types::attribute::{AttributeType, XorMappedAddress};
    use stun_types::message::{BINDING, Message, MessageWriteExt};

    #[test]
    fn binding_answers_the_source_address_without_authentication() {
        let now = Instant::now();
        let mut c = core(0, now);
        let mut out = Vec::new();
        let req = request(BINDING, "", |_, _| {});
        c.handle_client(now, client(), &req, &mut FakeRelays::default(), &mut out);
        let t = out.pop().unwrap();
        assert_eq!(t.ft, client());
        let m = Message::from_bytes(&t.data).unwrap();
        let x = m.attribute::<XorMappedAddress>().unwrap();
        assert_eq!(x.addr(m.transaction_id()), client().client);
        assert_eq!(c.stats().bindings, 1);
    }

    #[test]
    fn change_request_without_rfc5780_is_an_unknown_attribute() {
        let now = Instant::now();
        let mut c = core(0, now);
        let mut out = Vec::new();
        let req = request(BINDING, "", |w, _| {
            let raw =
                stun_types::attribute::RawAttribute::new(AttributeType::new(0x0003), &[0, 0, 0, 6]);
            w.add_attribute(&raw).unwrap();
        });
        c.handle_client(now, client(), &req, &mut FakeRelays::default(), &mut out);
        assert_eq!(code(&out.pop().unwrap().data), Some(420));
        assert_eq!(c.stats().bindings, 0);
    }
}
