//! Answers from the sequencer, handed to each network thread in bulk.
//!
//! A write or a linearizable read waits on a oneshot channel that the sequencer completes.
//! Completing one from the sequencer's thread wakes the waiting task remotely: tokio pushes
//! it into the runtime's injection queue and writes the runtime's eventfd, one syscall on
//! the sequencer's serial path per answer; the network thread, woken by the first answer
//! of a batch, then ran each request to its end on its own and hyper flushed each answer
//! with its own writev. Measured at put 16 conns / 256 clients: ~1 writev and ~1 eventfd
//! write per request.
//!
//! So an [`Answer`] made on a network thread remembers that thread's [`AnswerInbox`], and
//! the sequencer collects a batch's answers in an [`Outbox`], one list per inbox, and
//! hands over each list with one send. The network thread completes the oneshots itself:
//! local wakes, no syscall, and all of a batch's answers are ready before its connections
//! flush, so one write carries many of them.
//!
//! An answer made anywhere else (the lessor, the compactor, tests) has no inbox and is
//! completed directly, as before; so is a thread's lone answer of a turn (a single client):
//! it costs one wake either way, and directly it skips a turn of the inbox's task.

use std::cell::RefCell;
use std::sync::Arc;

use corekv_engine::mvcc::{CommandResponse, ReadView};
use corekv_engine::KvError;
use tokio::sync::oneshot;

use crate::shard_api::Reply;

/// What a write's waiter receives.
pub type WriteResult = Result<Reply<CommandResponse>, KvError>;
/// What a linearizable read's waiter receives: a view at or after its read index, and the
/// raft term.
pub type ReadResult = Result<(ReadView, u64), KvError>;

/// Lists of answers one inbox may have queued. A network thread's deliver task takes each
/// list as soon as its runtime gets to it, so this is reached only by a thread that stopped
/// running; the sequencer then completes that thread's answers directly instead of waiting.
pub const INBOX_BATCHES_MAX: usize = 1024;

/// Room a new list in the outbox starts with: past the first growths a list moves rarely,
/// and a single client's list stays one small allocation.
const LIST_CAPACITY_FIRST: usize = 16;

/// One completed answer, ready to be delivered on its network thread.
pub enum Delivery {
    Write(oneshot::Sender<WriteResult>, WriteResult),
    Read(oneshot::Sender<ReadResult>, ReadResult),
}

impl Delivery {
    fn deliver(self) {
        // A waiter that went away (its client cancelled) simply does not hear back.
        match self {
            Delivery::Write(tx, value) => drop(tx.send(value)),
            Delivery::Read(tx, value) => drop(tx.send(value)),
        }
    }
}

/// The values an [`Answer`] can carry.
pub trait Deliverable: Sized {
    /// The delivery completing `tx` with `value`.
    fn delivery(tx: oneshot::Sender<Self>, value: Self) -> Delivery;
}

impl Deliverable for WriteResult {
    fn delivery(tx: oneshot::Sender<Self>, value: Self) -> Delivery {
        Delivery::Write(tx, value)
    }
}

impl Deliverable for ReadResult {
    fn delivery(tx: oneshot::Sender<Self>, value: Self) -> Delivery {
        Delivery::Read(tx, value)
    }
}

/// The sending half of a network thread's inbox.
#[derive(Clone)]
struct InboxSender(Arc<flume::Sender<Vec<Delivery>>>);

thread_local! {
    /// This thread's inbox, if it is a network thread that installed one.
    static INBOX: RefCell<Option<InboxSender>> = const { RefCell::new(None) };
}

/// A network thread's inbox: the lists of answers the sequencer sends it.
pub struct AnswerInbox {
    rx: flume::Receiver<Vec<Delivery>>,
}

impl AnswerInbox {
    /// Makes the calling thread's inbox: answers made on this thread from now on are
    /// delivered through it, so [`AnswerInbox::deliver`] must run on this thread's runtime.
    pub fn install() -> AnswerInbox {
        let (tx, rx) = flume::bounded(INBOX_BATCHES_MAX);
        INBOX.with(|inbox| *inbox.borrow_mut() = Some(InboxSender(Arc::new(tx))));
        AnswerInbox { rx }
    }

    /// Delivers every list the sequencer sends, until the thread's inbox is gone.
    pub async fn deliver(self) {
        while let Ok(batch) = self.rx.recv_async().await {
            for delivery in batch {
                delivery.deliver();
            }
        }
    }
}

/// Where the sequencer sends one write's or read's result. Made on the thread that waits.
pub struct Answer<T> {
    tx: oneshot::Sender<T>,
    inbox: Option<InboxSender>,
}

impl<T: Deliverable> Answer<T> {
    /// An answer and the receiver its waiter awaits. Remembers the calling thread's inbox.
    pub fn channel() -> (Answer<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        let inbox = INBOX.with(|inbox| inbox.borrow().clone());
        (Answer { tx, inbox }, rx)
    }

    /// Completes the answer now, from this thread (errors and other rare answers).
    /// Gives the value back if the waiter is gone.
    pub fn send(self, value: T) -> Result<(), T> {
        self.tx.send(value)
    }
}

/// The sequencer's answers of one loop turn, grouped by the inbox they go to.
#[derive(Default)]
pub struct Outbox {
    /// Bounded by the number of network threads: one entry per inbox seen this turn.
    lists: Vec<(InboxSender, Vec<Delivery>)>,
}

impl Outbox {
    /// Queues `value` for `answer`'s waiter, or completes it now if it has no inbox.
    pub fn push<T: Deliverable>(&mut self, answer: Answer<T>, value: T) {
        let Some(inbox) = answer.inbox else {
            let _ = answer.tx.send(value);
            return;
        };
        let delivery = T::delivery(answer.tx, value);
        match self
            .lists
            .iter_mut()
            .find(|(known, _)| Arc::ptr_eq(&known.0, &inbox.0))
        {
            Some((_, list)) => list.push(delivery),
            None => {
                // Sized for a typical batch's share, so pushes rarely move the list.
                let mut list = Vec::with_capacity(LIST_CAPACITY_FIRST);
                list.push(delivery);
                self.lists.push((inbox, list));
            }
        }
    }

    /// Hands each inbox its list. An inbox that is full (its thread stopped running)
    /// gets its answers completed directly instead; one that is gone drops them, which
    /// its waiters see as a closed channel.
    pub fn flush(&mut self) {
        for (inbox, list) in self.lists.drain(..) {
            // A lone answer (a single client's) costs one wake either way: completed here it
            // skips the inbox task's turn on its thread.
            if list.len() == 1 {
                list.into_iter().for_each(Delivery::deliver);
                continue;
            }
            if let Err(flume::TrySendError::Full(list)) = inbox.0.try_send(list) {
                list.into_iter().for_each(Delivery::deliver);
            }
        }
    }

    /// True if nothing is queued.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.lists.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_result(revision: i64) -> WriteResult {
        Err(KvError::Unavailable(format!("answer {revision}")))
    }

    fn message(result: WriteResult) -> String {
        match result {
            Err(KvError::Unavailable(message)) => message,
            _ => panic!("unexpected result"),
        }
    }

    /// Answers made on a thread with an inbox arrive only once the outbox is flushed and
    /// the inbox delivered, in one list; answers made elsewhere are completed at once.
    #[test]
    fn answers_go_through_the_inbox_of_the_thread_that_made_them() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let inbox = AnswerInbox::install();
        let (a, mut rx_a) = Answer::<WriteResult>::channel();
        let (b, mut rx_b) = Answer::<WriteResult>::channel();
        let (direct, mut rx_direct) = std::thread::spawn(Answer::<WriteResult>::channel)
            .join()
            .unwrap();

        let mut outbox = Outbox::default();
        outbox.push(a, put_result(1));
        outbox.push(direct, put_result(3));
        outbox.push(b, put_result(2));
        assert_eq!(message(rx_direct.try_recv().unwrap()), "answer 3");
        assert!(rx_a.try_recv().is_err(), "queued until flushed");
        assert_eq!(outbox.lists.len(), 1, "one list per inbox");
        outbox.flush();
        assert!(outbox.is_empty());
        assert!(rx_a.try_recv().is_err(), "delivered by the inbox's thread");

        INBOX.with(|inbox| inbox.borrow_mut().take());
        runtime.block_on(inbox.deliver());
        assert_eq!(message(rx_a.try_recv().unwrap()), "answer 1");
        assert_eq!(message(rx_b.try_recv().unwrap()), "answer 2");
    }

    /// A lone answer is completed at once, even for a thread with an inbox.
    #[test]
    fn a_lone_answer_is_completed_directly() {
        let _inbox = AnswerInbox::install();
        let (answer, mut rx) = Answer::<WriteResult>::channel();
        let mut outbox = Outbox::default();
        outbox.push(answer, put_result(5));
        assert!(rx.try_recv().is_err(), "queued until flushed");
        outbox.flush();
        assert_eq!(message(rx.try_recv().unwrap()), "answer 5");
        INBOX.with(|inbox| inbox.borrow_mut().take());
    }

    /// A full inbox does not stall the sequencer: the answers are completed directly.
    #[test]
    fn a_full_inbox_gets_its_answers_directly() {
        let _inbox = AnswerInbox::install();
        let mut outbox = Outbox::default();
        for _ in 0..INBOX_BATCHES_MAX {
            for _ in 0..2 {
                let (answer, _rx) = Answer::<WriteResult>::channel();
                outbox.push(answer, put_result(0));
            }
            outbox.flush();
        }
        let (answer, mut rx) = Answer::<WriteResult>::channel();
        let (other, mut rx_other) = Answer::<WriteResult>::channel();
        outbox.push(answer, put_result(7));
        outbox.push(other, put_result(8));
        outbox.flush();
        assert_eq!(message(rx.try_recv().unwrap()), "answer 7");
        assert_eq!(message(rx_other.try_recv().unwrap()), "answer 8");
        INBOX.with(|inbox| inbox.borrow_mut().take());
    }
}
