//! vSphere agents: the hosts vpoller polls, by the name clients use.

mod direct;

pub use direct::DirectAgent;
