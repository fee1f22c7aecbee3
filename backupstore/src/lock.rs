//! Volume locks interoperable with Longhorn's: the same files (`locks/lock-<hex>.lck`), types
//! (1 = backup/restore, 2 = delete), expiry (150 s after the file's mtime), refresh (every 60 s),
//! and acquisition rule (write own lock, wait 2 s, list; lose to a lock of the other type that is
//! acquired, or older, or as old with a smaller name, unless it has expired).

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::format::LockFile;
use crate::names::{generate_lock_name, lock_name_from_file, lock_path, locks_dir};
use crate::store::{Store, file_name};

/// Which operations a lock admits together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Type 1: backups and restores run together.
    Shared,
    /// Type 2: deletes exclude everything else.
    Exclusive,
}

impl LockKind {
    fn type_number(self) -> i64 {
        match self {
            LockKind::Shared => 1,
            LockKind::Exclusive => 2,
        }
    }
}

/// The timings of the protocol. Change them only in tests: other clients assume the defaults.
#[derive(Debug, Clone, Copy)]
pub struct LockTimings {
    pub expiry: Duration,
    pub refresh: Duration,
    pub check_wait: Duration,
    pub retry_interval: Duration,
    pub max_wait: Duration,
}

impl Default for LockTimings {
    fn default() -> Self {
        LockTimings {
            expiry: Duration::from_secs(150),
            refresh: Duration::from_secs(60),
            check_wait: Duration::from_secs(2),
            retry_interval: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
        }
    }
}

/// A lock as found in the store.
#[derive(Debug, Clone)]
struct SeenLock {
    name: String,
    lock_type: i64,
    acquired: bool,
    mtime: jiff::Timestamp,
}

/// Longhorn's order of precedence: acquired first, then older, then smaller name.
fn precedence(a: &SeenLock, b: &SeenLock) -> Ordering {
    match (a.acquired, b.acquired) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.mtime.cmp(&b.mtime).then_with(|| a.name.cmp(&b.name)),
    }
}

fn expired(lock: &SeenLock, now: jiff::Timestamp, expiry: Duration) -> bool {
    now.duration_since(lock.mtime).unsigned_abs() > expiry && now > lock.mtime
}

/// Whether `me` may proceed given all locks `seen` (pure, the rule above). Returns the lock that
/// blocks it, if any.
fn blocker<'a>(
    me: &SeenLock,
    seen: &'a [SeenLock],
    now: jiff::Timestamp,
    expiry: Duration,
) -> Option<&'a SeenLock> {
    seen.iter().find(|other| {
        other.name != me.name
            && other.lock_type != me.lock_type
            && precedence(other, me) == Ordering::Less
            && !expired(other, now, expiry)
    })
}

async fn list_locks(store: &Store, volume: &str) -> Result<Vec<SeenLock>> {
    let (files, _) = store.list_dir(&locks_dir(volume)).await?;
    let loads = files.into_iter().filter_map(|f| {
        let name = lock_name_from_file(file_name(&f.rel))?.to_string();
        Some(async move {
            // A lock that vanished or cannot be parsed is skipped, as Longhorn does.
            let data = store.get_opt(&f.rel).await.ok().flatten()?;
            let parsed = LockFile::from_json(&data).ok()?;
            Some(SeenLock {
                name,
                lock_type: parsed.lock_type,
                acquired: parsed.acquired,
                mtime: f.mtime,
            })
        })
    });
    Ok(futures::stream::iter(loads)
        .buffer_unordered(16)
        .filter_map(|x| async move { x })
        .collect()
        .await)
}

/// A lock file written but not yet confirmed.
pub(crate) struct PendingLock {
    store: Store,
    volume: String,
    me: SeenLock,
    kind: LockKind,
    written_at: tokio::time::Instant,
    timings: LockTimings,
}

async fn write_lock(store: &Store, volume: &str, me: &SeenLock) -> Result<jiff::Timestamp> {
    let rel = lock_path(volume, &me.name);
    let body = LockFile {
        name: me.name.clone(),
        lock_type: me.lock_type,
        acquired: me.acquired,
    }
    .to_json();
    store.put(&rel, Bytes::from(body)).await?;
    // The lock's time is the server's mtime of its file, never our clock.
    Ok(store
        .head(&rel)
        .await?
        .map(|l| l.mtime)
        .unwrap_or_else(jiff::Timestamp::now))
}

impl PendingLock {
    /// Writes a new lock file of `kind` for `volume`.
    pub(crate) async fn start(store: &Store, volume: &str, kind: LockKind) -> Result<PendingLock> {
        let timings = store.lock_timings();
        let mut me = SeenLock {
            name: generate_lock_name(),
            lock_type: kind.type_number(),
            acquired: false,
            mtime: jiff::Timestamp::UNIX_EPOCH,
        };
        me.mtime = write_lock(store, volume, &me).await?;
        Ok(PendingLock {
            store: store.clone(),
            volume: volume.to_string(),
            me,
            kind,
            written_at: tokio::time::Instant::now(),
            timings,
        })
    }

    /// One early look at the other locks, right after writing ours: true when no live lock of
    /// the other type exists. Then no client of the other type can act until we release (any
    /// that comes later finds ours older), so reads taken now stay valid.
    /// How long after a clean [`PendingLock::uncontended_now`] check a read-only operation may
    /// still finish without waiting for the confirmation. A client of the other type that was
    /// not in that listing wrote its lock after it, and the protocol makes it wait `check_wait`
    /// before acting; a margin covers timer slack.
    pub(crate) fn read_only_window(&self) -> Duration {
        self.timings
            .check_wait
            .saturating_sub(self.timings.check_wait / 10)
    }

    pub(crate) async fn uncontended_now(&self) -> Result<bool> {
        let seen = list_locks(&self.store, &self.volume).await?;
        let now = jiff::Timestamp::now();
        Ok(!seen.iter().any(|l| {
            l.name != self.me.name
                && l.lock_type != self.me.lock_type
                && !expired(l, now, self.timings.expiry)
        }))
    }

    /// Waits the protocol's 2 s, then checks (and re-checks every 10 s up to 30 s) until no lock
    /// of the other type has precedence. `contended` in the result tells whether a live lock of
    /// the other type was seen at any check.
    pub(crate) async fn confirm(self, purpose: &'static str) -> Result<HeldLock> {
        self.confirm_unless(purpose, CancellationToken::new())
            .await?
            .ok_or(Error::Cancelled)
    }

    /// Like [`PendingLock::confirm`], but if `withdraw` fires during the 2 s wait, removes the
    /// lock file and returns `None` (the caller finished without needing the lock).
    pub(crate) async fn confirm_unless(
        self,
        purpose: &'static str,
        withdraw: CancellationToken,
    ) -> Result<Option<HeldLock>> {
        tokio::select! {
            _ = tokio::time::sleep_until(self.written_at + self.timings.check_wait) => {}
            _ = withdraw.cancelled() => {
                self.remove().await;
                return Ok(None);
            }
        }
        self.confirm_after_wait(purpose).await.map(Some)
    }

    async fn confirm_after_wait(self, purpose: &'static str) -> Result<HeldLock> {
        let mut contended = false;
        loop {
            let seen = match list_locks(&self.store, &self.volume).await {
                Ok(seen) => seen,
                Err(e) => {
                    self.remove().await;
                    return Err(e);
                }
            };
            let now = jiff::Timestamp::now();
            contended |= seen.iter().any(|l| {
                l.name != self.me.name
                    && l.lock_type != self.me.lock_type
                    && !expired(l, now, self.timings.expiry)
            });
            match blocker(&self.me, &seen, now, self.timings.expiry) {
                None => break,
                Some(b) => {
                    if self.written_at.elapsed() > self.timings.max_wait {
                        let holder = b.name.clone();
                        self.remove().await;
                        return Err(Error::LockBusy {
                            target: self.store.label().to_string(),
                            volume: self.volume.clone(),
                            purpose,
                            holder,
                        });
                    }
                    tokio::time::sleep(self.timings.retry_interval).await;
                }
            }
        }
        let mut me = self.me.clone();
        me.acquired = true;
        if let Err(e) = write_lock(&self.store, &self.volume, &me).await {
            self.remove().await;
            return Err(e);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (store, volume, me, lost) = (
                self.store.clone(),
                self.volume.clone(),
                me.clone(),
                lost.clone(),
            );
            let every = self.timings.refresh;
            tokio::spawn(async move {
                let mut failures = 0;
                loop {
                    tokio::time::sleep(every).await;
                    match write_lock(&store, &volume, &me).await {
                        Ok(_) => failures = 0,
                        Err(e) => {
                            failures += 1;
                            tracing::warn!(volume, error = %e, "lock refresh failed");
                            if failures >= 2 {
                                lost.store(true, AtomicOrdering::SeqCst);
                            }
                        }
                    }
                }
            })
        };
        Ok(HeldLock {
            store: self.store.clone(),
            volume: self.volume.clone(),
            name: me.name,
            kind: self.kind,
            contended,
            lost,
            refresher: Some(refresher),
        })
    }

    async fn remove(&self) {
        if let Err(e) = self
            .store
            .delete(&lock_path(&self.volume, &self.me.name))
            .await
        {
            tracing::warn!(volume = self.volume, error = %e, "could not remove lock");
        }
    }
}

/// A confirmed lock, refreshed in the background until released.
pub(crate) struct HeldLock {
    store: Store,
    volume: String,
    name: String,
    kind: LockKind,
    /// Whether a live lock of the other type was seen while acquiring.
    pub(crate) contended: bool,
    lost: Arc<AtomicBool>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl HeldLock {
    /// Takes a lock of `kind`, waiting as the protocol requires.
    pub(crate) async fn acquire(
        store: &Store,
        volume: &str,
        kind: LockKind,
        purpose: &'static str,
    ) -> Result<HeldLock> {
        PendingLock::start(store, volume, kind)
            .await?
            .confirm(purpose)
            .await
    }

    /// Fails if refreshing the lock failed (it may have expired and been overtaken).
    pub(crate) fn check(&self) -> Result<()> {
        if self.lost.load(AtomicOrdering::SeqCst) {
            return Err(Error::LockLost {
                target: self.store.label().to_string(),
                volume: self.volume.clone(),
            });
        }
        Ok(())
    }

    /// The lock file's name (so a volume delete can spare it until the end).
    pub(crate) fn file(&self) -> String {
        lock_path(&self.volume, &self.name)
    }

    /// Stops refreshing and removes the lock file.
    pub(crate) async fn release(mut self) -> Result<()> {
        if let Some(r) = self.refresher.take() {
            r.abort();
        }
        self.store.delete(&self.file()).await
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(r) = self.refresher.take() {
            r.abort();
            // Dropped without release (an error path): remove the file in the background.
            let (store, file) = (self.store.clone(), self.file());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = store.delete(&file).await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(name: &str, t: i64, acquired: bool, secs: i64) -> SeenLock {
        SeenLock {
            name: name.into(),
            lock_type: t,
            acquired,
            mtime: jiff::Timestamp::from_second(secs).expect("ts"),
        }
    }

    #[test]
    fn the_precedence_rule_matches_longhorn() {
        let now = jiff::Timestamp::from_second(1000).expect("ts");
        let exp = Duration::from_secs(150);
        let me = lock("lock-b", 1, false, 990);
        // Same type never blocks.
        assert!(blocker(&me, &[lock("lock-a", 1, true, 900)], now, exp).is_none());
        // Other type, acquired: blocks even if younger.
        assert!(blocker(&me, &[lock("lock-z", 2, true, 999)], now, exp).is_some());
        // Other type, not acquired, older: blocks; younger: does not.
        assert!(blocker(&me, &[lock("lock-z", 2, false, 980)], now, exp).is_some());
        assert!(blocker(&me, &[lock("lock-a", 2, false, 995)], now, exp).is_none());
        // Same time: smaller name wins.
        assert!(blocker(&me, &[lock("lock-a", 2, false, 990)], now, exp).is_some());
        assert!(blocker(&me, &[lock("lock-c", 2, false, 990)], now, exp).is_none());
        // Expired locks never block.
        assert!(blocker(&me, &[lock("lock-a", 2, true, 800)], now, exp).is_none());
        // Our own file is ignored.
        assert!(blocker(&me, std::slice::from_ref(&me), now, exp).is_none());
    }
}

/// Shared locks kept after an operation for a while (opt-in, [`Store::with_lock_linger`]) so
/// the next backup or restore of the volume by this client skips the protocol's 2 s wait, as
/// Longhorn's own lock does when it is already held. Deletes by this client release it first.
#[derive(Default)]
pub(crate) struct LockPark {
    parked: std::sync::Mutex<std::collections::HashMap<String, (u64, HeldLock)>>,
    generation: std::sync::atomic::AtomicU64,
}

impl LockPark {
    fn take(&self, volume: &str) -> Option<HeldLock> {
        self.parked.lock().ok()?.remove(volume).map(|(_, h)| h)
    }

    fn take_all(&self) -> Vec<HeldLock> {
        match self.parked.lock() {
            Ok(mut map) => map.drain().map(|(_, (_, h))| h).collect(),
            Err(_) => Vec::new(),
        }
    }
}

impl Store {
    /// A still-valid parked shared lock on `volume`, if any.
    pub(crate) async fn take_parked(&self, volume: &str) -> Option<HeldLock> {
        let held = self.lock_park().take(volume)?;
        if held.check().is_ok() && held.kind == LockKind::Shared {
            Some(held)
        } else {
            let _ = held.release().await;
            None
        }
    }

    /// Ends a shared operation: parks its lock if lingering is on, else releases it.
    pub(crate) async fn finish_shared(&self, held: HeldLock) -> Result<()> {
        let linger = self.lock_linger();
        if linger.is_zero() || held.check().is_err() || held.kind != LockKind::Shared {
            return held.release().await;
        }
        let park = self.lock_park();
        let volume = held.volume.clone();
        let generation = park.generation.fetch_add(1, AtomicOrdering::SeqCst);
        let previous = match park.parked.lock() {
            Ok(mut map) => map
                .insert(volume.clone(), (generation, held))
                .map(|(_, h)| h),
            Err(_) => return Ok(()),
        };
        if let Some(previous) = previous {
            previous.release().await?;
        }
        let store = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(linger).await;
            let park = store.lock_park();
            let expired = park
                .parked
                .lock()
                .ok()
                .and_then(|mut map| match map.get(&volume) {
                    Some((g, _)) if *g == generation => map.remove(&volume).map(|(_, h)| h),
                    _ => None,
                });
            if let Some(held) = expired {
                let _ = held.release().await;
            }
        });
        Ok(())
    }

    /// Releases this client's parked lock on `volume` (before taking the exclusive lock).
    pub(crate) async fn unpark(&self, volume: &str) -> Result<()> {
        match self.lock_park().take(volume) {
            Some(held) => held.release().await,
            None => Ok(()),
        }
    }

    /// Releases every lock this client keeps parked ([`Store::with_lock_linger`]). Call it
    /// before the process exits; otherwise the lock files expire on their own after 150 s.
    pub async fn close(&self) -> Result<()> {
        for held in self.lock_park().take_all() {
            held.release().await?;
        }
        Ok(())
    }
}
