//! The bus's settings, and what it counts and answers.

use crate::Overflow;

/// How [`Bus::publish_and_wait`] runs the async handlers of one event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AwaitMode {
    /// All handlers at once; returns when the last one is done.
    #[default]
    Concurrent,
    /// One handler after another, in registration order.
    Sequential,
}

/// Where an async handler starts on an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AsyncStart {
    /// Inside the emit, as JavaScript starts an async function, when the emit runs
    /// on a tokio task and the handler is idle with nothing queued: the handler runs
    /// until it finishes or waits on something not yet ready, and its own task
    /// carries on from there. Otherwise (the handler is busy with an earlier event,
    /// or the emitting thread is not a tokio task) the event is queued for the
    /// handler's task. Either way one handler takes its events one at a time, in
    /// emit order, and `emit` does not wait for anything the handler awaits.
    #[default]
    InEmit,
    /// Always on the handler's own task: an emit only queues the event, and never
    /// runs handler code.
    OnTask,
}

/// Bus-wide settings.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// Warn (once per event type) when more listeners than this are subscribed to
    /// one type; 0 disables the warning. Node's default is 10.
    pub max_listeners: usize,
    /// How [`Bus::publish_and_wait`] runs async handlers.
    pub await_mode: AwaitMode,
    /// Events queued per async handler.
    pub handler_queue_capacity: usize,
    /// What a full async-handler queue does.
    pub handler_queue_overflow: Overflow,
    /// Where async handlers start on an event.
    pub async_start: AsyncStart,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            max_listeners: 10,
            await_mode: AwaitMode::Concurrent,
            handler_queue_capacity: 1024,
            handler_queue_overflow: Overflow::Wait,
            async_start: AsyncStart::InEmit,
        }
    }
}

/// Buffer size and overflow policy of one stream subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Events buffered before the overflow policy applies.
    pub capacity: usize,
    /// What happens when the buffer is full.
    pub overflow: Overflow,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            capacity: 1024,
            overflow: Overflow::Wait,
        }
    }
}

/// Counters of what went wrong, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Handlers that returned an error.
    pub handler_failures: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// Handler errors that no error handler took, and so went to the log.
    pub errors_logged: u64,
    /// Events refused by a full subscriber buffer.
    pub overflow_refused: u64,
    /// Listener-count warnings given.
    pub listener_warnings: u64,
}

/// What [`Bus::publish_and_wait`] saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handled {
    /// Async handlers that the event was given to.
    pub handlers: usize,
    /// Of those, handlers that failed, panicked, or were unsubscribed first.
    pub failed: usize,
}
