//! One memory budget for all Lua calls in flight together.
//!
//! A per-call limit alone is no bound: 1,024 calls in flight at 256 MiB
//! each is 256 GiB. So each call holds a reservation from a shared pool and
//! its state's allocator limit is set to exactly what it holds: Lua cannot
//! allocate past it, and the reservations never add up to more than the
//! pool. A call starts small and grows its reservation as it goes, from the
//! instruction hook and before a large value is handed to Lua, up to the
//! per-call limit and as far as the pool allows.

use mlua::Lua;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a call holds when it starts.
const INITIAL: usize = 512 << 10;

/// The shared budget.
#[derive(Debug)]
pub struct MemoryPool {
    total: usize,
    reserved: AtomicUsize,
}

impl MemoryPool {
    pub fn new(total: usize) -> Arc<MemoryPool> {
        Arc::new(MemoryPool {
            total,
            reserved: AtomicUsize::new(0),
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes reserved by the calls in flight.
    pub fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Takes up to `want` bytes; returns what it got.
    fn take(&self, want: usize) -> usize {
        let mut current = self.reserved.load(Ordering::Relaxed);
        loop {
            let granted = want.min(self.total.saturating_sub(current));
            if granted == 0 {
                return 0;
            }
            match self.reserved.compare_exchange_weak(
                current,
                current + granted,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return granted,
                Err(seen) => current = seen,
            }
        }
    }

    fn give(&self, bytes: usize) {
        self.reserved.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One call's share, kept in its state's app data; given back when dropped.
pub(crate) struct Reservation {
    pool: Arc<MemoryPool>,
    /// What the state used before the call: scripts and libraries.
    base: usize,
    held: usize,
    per_call: usize,
}

impl Reservation {
    /// Reserves the start of a call's memory and limits the state to it.
    pub fn start(lua: &Lua, pool: &Arc<MemoryPool>, per_call: usize) -> Result<(), String> {
        let want = INITIAL.min(per_call);
        let held = pool.take(want);
        if held < want {
            pool.give(held);
            return Err(format!(
                "the memory budget of all Lua calls in flight ({} MiB) is in use; try again",
                pool.total >> 20
            ));
        }
        let reservation = Reservation {
            pool: pool.clone(),
            base: lua.used_memory(),
            held,
            per_call,
        };
        reservation.apply(lua);
        lua.set_app_data(reservation);
        Ok(())
    }

    /// Gives the call's share back and lifts the state's limit to `limit`
    /// (for the work done outside a call: loading scripts).
    pub fn end(lua: &Lua, limit: usize) {
        drop(lua.remove_app_data::<Reservation>());
        let _ = lua.set_memory_limit(lua.used_memory().saturating_add(limit));
    }

    /// Makes room for `extra` more bytes on top of what the call uses now,
    /// with as much again to spare; a no-op outside a call.
    pub fn make_room(lua: &Lua, extra: usize) {
        if let Some(mut r) = lua.app_data_mut::<Reservation>() {
            r.grow(lua, extra);
        }
    }

    /// True when the call could not grow because the pool was used up, not
    /// because it reached its own limit.
    pub fn starved(lua: &Lua) -> Option<usize> {
        let r = lua.app_data_ref::<Reservation>()?;
        (r.held < r.per_call).then_some(r.pool.total)
    }

    fn grow(&mut self, lua: &Lua, extra: usize) {
        let used = lua.used_memory().saturating_sub(self.base);
        let needed = used.saturating_add(extra).saturating_mul(2);
        if needed <= self.held || self.held >= self.per_call {
            return;
        }
        let want = needed.max(self.held.saturating_mul(2)).min(self.per_call);
        self.held += self.pool.take(want - self.held);
        self.apply(lua);
    }

    fn apply(&self, lua: &Lua) {
        let _ = lua.set_memory_limit(self.base.saturating_add(self.held));
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.give(self.held);
    }
}

/// About what a JSON value takes once it is Lua tables and strings.
pub(crate) fn lua_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::String(s) => 32 + s.len(),
        Value::Array(items) => 64 + items.iter().map(|v| 16 + lua_size(v)).sum::<usize>(),
        Value::Object(map) => {
            64 + map
                .iter()
                .map(|(k, v)| 40 + k.len() + lua_size(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_add_up_to_more_than_the_pool() {
        let pool = MemoryPool::new(4 << 20);
        let states: Vec<Lua> = (0..10).map(|_| Lua::new()).collect();
        let mut started = 0;
        for lua in &states {
            if Reservation::start(lua, &pool, 256 << 20).is_ok() {
                started += 1;
            }
        }
        assert_eq!(started, 8, "4 MiB holds eight 512 KiB starts");
        assert!(pool.reserved() <= pool.total());
        for lua in &states {
            Reservation::make_room(lua, 8 << 20);
        }
        assert!(pool.reserved() <= pool.total());
        // A state cannot allocate past what it holds.
        let greedy = &states[0];
        let big = greedy
            .load("return string.rep('x', 16 * 1024 * 1024)")
            .eval::<mlua::LuaString>();
        assert!(big.is_err(), "16 MiB is past the share of a full pool");
        assert!(Reservation::starved(greedy).is_some());
        for lua in &states {
            Reservation::end(lua, 256 << 20);
        }
        assert_eq!(pool.reserved(), 0, "every byte came back");
    }

    #[test]
    fn a_call_grows_as_it_goes_up_to_its_own_limit() {
        let pool = MemoryPool::new(64 << 20);
        let lua = Lua::new();
        Reservation::start(&lua, &pool, 8 << 20).expect("start");
        Reservation::make_room(&lua, 2 << 20);
        let grown = pool.reserved();
        assert!(grown >= 4 << 20, "{grown}");
        assert!(
            lua.load("return string.rep('x', 1024 * 1024)")
                .eval::<mlua::LuaString>()
                .is_ok()
        );
        Reservation::make_room(&lua, 100 << 20);
        assert_eq!(pool.reserved(), 8 << 20, "capped at the per-call limit");
        Reservation::end(&lua, 8 << 20);
        assert_eq!(pool.reserved(), 0);
    }
}
