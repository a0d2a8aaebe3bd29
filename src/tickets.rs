//! Stream tickets: EventSource cannot send headers, and a user token in a URL ends up in
//! reverse-proxy access logs. So the UI trades its token (in a header) for an opaque ticket
//! that opens one live stream: valid [`TICKET_TTL`], usable once, bound to the workspace and
//! user it was issued for. Tickets live in memory only and their number is bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::clockify::token::Claims;

/// How long a ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Tickets held at most; the oldest goes first when more are issued.
const MAX_TICKETS: usize = 10_000;
/// Unused tickets one user of a workspace may hold; the oldest goes first.
const MAX_PER_USER: usize = 8;

/// What a ticket stands for: the verified claims of the token it was issued for.
#[derive(Clone)]
pub struct Ticket {
    pub claims: Arc<Claims>,
    pub workspace_id: String,
    issued: Instant,
}

#[derive(Default)]
pub struct StreamTickets {
    tickets: Mutex<HashMap<String, Ticket>>,
}

impl StreamTickets {
    /// A new ticket for the user of `claims` in `workspace_id`.
    pub fn issue(&self, workspace_id: &str, claims: Arc<Claims>) -> String {
        self.issue_at(workspace_id, claims, Instant::now())
    }

    /// Takes the ticket (so it works once) if it exists and has not expired.
    pub fn redeem(&self, ticket: &str) -> Option<Ticket> {
        self.redeem_at(ticket, Instant::now())
    }

    fn issue_at(&self, workspace_id: &str, claims: Arc<Claims>, now: Instant) -> String {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("operating system random source");
        let ticket = URL_SAFE_NO_PAD.encode(random);
        let mut tickets = self.tickets.lock().expect("stream tickets lock");
        tickets.retain(|_, t| now.duration_since(t.issued) < TICKET_TTL);
        let user = claims.user.clone();
        let same_user = |t: &Ticket| t.workspace_id == workspace_id && t.claims.user == user;
        if tickets.values().filter(|t| same_user(t)).count() >= MAX_PER_USER {
            drop_oldest(&mut tickets, same_user);
        }
        if tickets.len() >= MAX_TICKETS {
            drop_oldest(&mut tickets, |_| true);
        }
        tickets.insert(
            ticket.clone(),
            Ticket {
                claims,
                workspace_id: workspace_id.to_string(),
                issued: now,
            },
        );
        ticket
    }

    fn redeem_at(&self, ticket: &str, now: Instant) -> Option<Ticket> {
        let taken = self
            .tickets
            .lock()
            .expect("stream tickets lock")
            .remove(ticket)?;
        (now.duration_since(taken.issued) < TICKET_TTL).then_some(taken)
    }
}

fn drop_oldest(tickets: &mut HashMap<String, Ticket>, matching: impl Fn(&Ticket) -> bool) {
    let oldest = tickets
        .iter()
        .filter(|(_, t)| matching(t))
        .min_by_key(|(_, t)| t.issued)
        .map(|(k, _)| k.clone());
    if let Some(key) = oldest {
        tickets.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(user: &str) -> Arc<Claims> {
        Arc::new(Claims {
            user: Some(user.to_string()),
            ..Claims::default()
        })
    }

    #[test]
    fn a_ticket_works_once_and_each_user_holds_a_bounded_number() {
        let tickets = StreamTickets::default();
        let first = tickets.issue("ws", claims("u1"));
        let redeemed = tickets.redeem(&first).expect("a fresh ticket");
        assert_eq!(redeemed.workspace_id, "ws");
        assert!(tickets.redeem(&first).is_none(), "used once");
        assert!(tickets.redeem("made-up").is_none());

        let issued: Vec<String> = (0..MAX_PER_USER + 3)
            .map(|_| tickets.issue("ws", claims("u1")))
            .collect();
        let other = tickets.issue("ws", claims("u2"));
        assert_eq!(
            tickets.tickets.lock().unwrap().len(),
            MAX_PER_USER + 1,
            "one user's tickets are capped"
        );
        assert!(
            tickets.redeem(&issued[0]).is_none(),
            "the oldest went first"
        );
        assert!(tickets.redeem(issued.last().unwrap()).is_some());
        assert!(tickets.redeem(&other).is_some());
    }

    #[test]
    fn a_ticket_expires_after_its_time() {
        let tickets = StreamTickets::default();
        let now = Instant::now();
        let late = tickets.issue_at("ws", claims("u1"), now);
        let in_time = tickets.issue_at("ws", claims("u1"), now);
        assert!(tickets.redeem_at(&late, now + TICKET_TTL).is_none());
        assert!(
            tickets
                .redeem_at(&in_time, now + TICKET_TTL - Duration::from_secs(1))
                .is_some()
        );
    }
}
