/// What another scheduler process (or this one) changed in the shared state, as
/// `LISTEN/NOTIFY` tells it.
public enum StateChange: Sendable, Equatable {
  /// The operation's stage changed.
  case operation(String)
  /// Work was queued (or queued again) for this scheduler.
  case queued
  /// The listener (re)connected: notifications may have been missed, so poll everything.
  case resubscribed
}
