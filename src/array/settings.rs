//! The `raid set` keys: each key's values, bounds and default, parsed into a [`Setting`] that
//! an array applies and an extension record stores. One table, so that a served array, a
//! restart (the record read back) and an offline reset accept exactly the same values: a
//! value that could wedge an array (a 1 ms I/O timeout fails every member at the first
//! write) is refused when typed and ignored when found on disk.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::members::{ArrayPolicy, MemberError, RebuildPriority, SparePolicy};
use super::persist::{format_size_bytes, parse_size_bytes, valid_stripe_cache_bytes};
use super::stripe_cache::DEFAULT_CACHE_BYTES;
use super::{Array, ReadPolicy};
use crate::metadata::extension::StoredSettings;

/// The keys `raid set` knows.
pub const SETTING_KEYS: &[&str] = &[
    "rebuild_priority",
    "rebuild_rate_mb_s",
    "spare_policy",
    "read_policy",
    "read_error_limit",
    "read_error_window_s",
    "io_timeout_ms",
    "stripe_cache",
];

/// The value that stands for a key's built-in default.
pub const DEFAULT_VALUE: &str = "default";

/// Highest rebuild rate limit: far above any member, low enough that the pacing arithmetic
/// stays in range.
pub const MAX_REBUILD_RATE_MB_S: u64 = 100_000;
/// Most read errors a window may allow before the member is failed.
pub const MAX_READ_ERROR_LIMIT: u32 = 100_000;
/// The read error window: at least a second, at most a day.
pub const MIN_READ_ERROR_WINDOW_S: u64 = 1;
pub const MAX_READ_ERROR_WINDOW_S: u64 = 86_400;
/// The shortest I/O timeout besides 0 (off). A healthy disk under load answers well within a
/// second, while a timeout of a few milliseconds fails healthy members of a busy array (the
/// Linux SCSI layer's default is 30 s).
pub const MIN_IO_TIMEOUT_MS: u64 = 1_000;
/// The longest: ten minutes; a device slower than that is as good as gone.
pub const MAX_IO_TIMEOUT_MS: u64 = 600_000;

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;
const BYTES_PER_MB: u64 = 1_000_000;

/// One `raid set` key with a value inside its bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    RebuildPriority(RebuildPriority),
    /// 0: no limit.
    RebuildRate {
        bytes_per_s: u64,
    },
    SparePolicy(SparePolicy),
    ReadPolicy(ReadPolicy),
    /// 0: read errors never fail a member.
    ReadErrorLimit(u32),
    ReadErrorWindow {
        ns: u64,
    },
    /// 0: no timeout.
    IoTimeout {
        ns: u64,
    },
    /// 0: no stripe cache.
    StripeCache {
        bytes: u64,
    },
}

/// What a key takes, for the error that refuses a value.
fn allowed(key: &str) -> String {
    match key {
        "rebuild_priority" => "low, normal or high".into(),
        "rebuild_rate_mb_s" => format!("0 (no limit) or 1 to {MAX_REBUILD_RATE_MB_S} (MB/s)"),
        "spare_policy" => "dedicated, shared or none".into(),
        "read_policy" => "round-robin or adaptive".into(),
        "read_error_limit" => format!("0 (never) or 1 to {MAX_READ_ERROR_LIMIT}"),
        "read_error_window_s" => {
            format!("{MIN_READ_ERROR_WINDOW_S} to {MAX_READ_ERROR_WINDOW_S} (seconds)")
        }
        "io_timeout_ms" => {
            format!("0 (off) or {MIN_IO_TIMEOUT_MS} to {MAX_IO_TIMEOUT_MS} (milliseconds)")
        }
        "stripe_cache" => "0 (off) or a multiple of 4K from 4K to 4G (e.g. 64M)".into(),
        _ => String::new(),
    }
}

impl Setting {
    /// Parses `key=value` as a user typed it; `value` may be `default`. Checks the bounds.
    pub fn parse(key: &str, value: &str) -> Result<Setting, MemberError> {
        let key = key.trim();
        let value = value.trim();
        if !SETTING_KEYS.contains(&key) {
            return Err(MemberError::UnknownKey(key.to_string()));
        }
        let bad = || MemberError::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            allowed: allowed(key),
        };
        if value == DEFAULT_VALUE {
            return Setting::default_of(key).ok_or_else(bad);
        }
        let number = || value.parse::<u64>().map_err(|_| bad());
        let setting = match key {
            "rebuild_priority" => Setting::RebuildPriority(match value {
                "low" => RebuildPriority::Low,
                "normal" => RebuildPriority::Normal,
                "high" => RebuildPriority::High,
                _ => return Err(bad()),
            }),
            "rebuild_rate_mb_s" => Setting::RebuildRate {
                bytes_per_s: number()?.checked_mul(BYTES_PER_MB).ok_or_else(bad)?,
            },
            "spare_policy" => Setting::SparePolicy(match value {
                "dedicated" => SparePolicy::Dedicated,
                "shared" => SparePolicy::Shared,
                "none" => SparePolicy::None,
                _ => return Err(bad()),
            }),
            "read_policy" => Setting::ReadPolicy(match value {
                "round-robin" | "round_robin" | "roundrobin" => ReadPolicy::RoundRobin,
                "adaptive" | "least-outstanding" | "least_outstanding" => {
                    ReadPolicy::LeastOutstanding
                }
                _ => return Err(bad()),
            }),
            "read_error_limit" => {
                Setting::ReadErrorLimit(u32::try_from(number()?).map_err(|_| bad())?)
            }
            "read_error_window_s" => Setting::ReadErrorWindow {
                ns: number()?.checked_mul(NS_PER_S).ok_or_else(bad)?,
            },
            "io_timeout_ms" => Setting::IoTimeout {
                ns: number()?.checked_mul(NS_PER_MS).ok_or_else(bad)?,
            },
            "stripe_cache" => Setting::StripeCache {
                bytes: parse_size_bytes(value).ok_or_else(bad)?,
            },
            _ => return Err(MemberError::UnknownKey(key.to_string())),
        };
        if setting.in_bounds() {
            Ok(setting)
        } else {
            Err(bad())
        }
    }

    /// The built-in default of `key`.
    pub fn default_of(key: &str) -> Option<Setting> {
        let p = ArrayPolicy::default();
        Some(match key {
            "rebuild_priority" => Setting::RebuildPriority(p.rebuild_priority),
            "rebuild_rate_mb_s" => Setting::RebuildRate {
                bytes_per_s: p.rebuild_rate_bytes_per_s,
            },
            "spare_policy" => Setting::SparePolicy(p.spare_policy),
            "read_policy" => Setting::ReadPolicy(ReadPolicy::LeastOutstanding),
            "read_error_limit" => Setting::ReadErrorLimit(p.failure.read_error_limit),
            "read_error_window_s" => Setting::ReadErrorWindow {
                ns: p.failure.read_error_window_ns,
            },
            "io_timeout_ms" => Setting::IoTimeout {
                ns: p.failure.io_timeout_ns,
            },
            "stripe_cache" => Setting::StripeCache {
                bytes: DEFAULT_CACHE_BYTES as u64,
            },
            _ => return None,
        })
    }

    pub fn key(&self) -> &'static str {
        match self {
            Setting::RebuildPriority(_) => "rebuild_priority",
            Setting::RebuildRate { .. } => "rebuild_rate_mb_s",
            Setting::SparePolicy(_) => "spare_policy",
            Setting::ReadPolicy(_) => "read_policy",
            Setting::ReadErrorLimit(_) => "read_error_limit",
            Setting::ReadErrorWindow { .. } => "read_error_window_s",
            Setting::IoTimeout { .. } => "io_timeout_ms",
            Setting::StripeCache { .. } => "stripe_cache",
        }
    }

    /// The value as `raid set` spells it (and `raid detail` shows it).
    pub fn value_text(&self) -> String {
        match *self {
            Setting::RebuildPriority(p) => p.name().into(),
            Setting::RebuildRate { bytes_per_s } => (bytes_per_s / BYTES_PER_MB).to_string(),
            Setting::SparePolicy(p) => p.name().into(),
            Setting::ReadPolicy(ReadPolicy::RoundRobin) => "round-robin".into(),
            Setting::ReadPolicy(ReadPolicy::LeastOutstanding) => "adaptive".into(),
            Setting::ReadErrorLimit(n) => n.to_string(),
            Setting::ReadErrorWindow { ns } => (ns / NS_PER_S).to_string(),
            Setting::IoTimeout { ns } => (ns / NS_PER_MS).to_string(),
            Setting::StripeCache { bytes } => format_size_bytes(bytes),
        }
    }

    /// Whether the value lies inside the key's bounds (the enumerations always do).
    pub fn in_bounds(&self) -> bool {
        match *self {
            Setting::RebuildRate { bytes_per_s } => {
                bytes_per_s <= MAX_REBUILD_RATE_MB_S * BYTES_PER_MB
            }
            Setting::ReadErrorLimit(n) => n <= MAX_READ_ERROR_LIMIT,
            Setting::ReadErrorWindow { ns } => (MIN_READ_ERROR_WINDOW_S * NS_PER_S
                ..=MAX_READ_ERROR_WINDOW_S * NS_PER_S)
                .contains(&ns),
            Setting::IoTimeout { ns } => {
                ns == 0
                    || (MIN_IO_TIMEOUT_MS * NS_PER_MS..=MAX_IO_TIMEOUT_MS * NS_PER_MS).contains(&ns)
            }
            Setting::StripeCache { bytes } => valid_stripe_cache_bytes(bytes),
            Setting::RebuildPriority(_) | Setting::SparePolicy(_) | Setting::ReadPolicy(_) => true,
        }
    }

    /// Records the value in an extension record's settings.
    pub fn store(&self, s: &mut StoredSettings) {
        match *self {
            Setting::RebuildPriority(p) => s.rebuild_priority = Some(priority_code(p)),
            Setting::RebuildRate { bytes_per_s } => s.rebuild_rate_bytes_per_s = Some(bytes_per_s),
            Setting::SparePolicy(p) => s.spare_policy = Some(spare_code(p)),
            Setting::ReadPolicy(p) => s.read_policy = Some(read_code(p)),
            Setting::ReadErrorLimit(n) => s.read_error_limit = Some(n),
            Setting::ReadErrorWindow { ns } => s.read_error_window_ns = Some(ns),
            Setting::IoTimeout { ns } => s.io_timeout_ns = Some(ns),
            Setting::StripeCache { bytes } => s.stripe_cache_bytes = Some(bytes),
        }
    }

    /// The settings a record carries, each checked against its bounds: `Err` holds the key
    /// and the stored value of one that is out of range (the default then stays).
    pub fn from_stored(s: &StoredSettings) -> Vec<Result<Setting, (&'static str, String)>> {
        let mut out = Vec::new();
        let mut push = |key: &'static str, raw: String, setting: Option<Setting>| {
            out.push(match setting {
                Some(v) if v.in_bounds() => Ok(v),
                _ => Err((key, raw)),
            })
        };
        if let Some(code) = s.rebuild_priority {
            let p = PRIORITY_BY_CODE.get(usize::from(code)).copied();
            push(
                "rebuild_priority",
                format!("code {code}"),
                p.map(Setting::RebuildPriority),
            );
        }
        if let Some(v) = s.rebuild_rate_bytes_per_s {
            let raw = format!("{v} bytes/s");
            push(
                "rebuild_rate_mb_s",
                raw,
                Some(Setting::RebuildRate { bytes_per_s: v }),
            );
        }
        if let Some(code) = s.spare_policy {
            let p = SPARE_BY_CODE.get(usize::from(code)).copied();
            push(
                "spare_policy",
                format!("code {code}"),
                p.map(Setting::SparePolicy),
            );
        }
        if let Some(code) = s.read_policy {
            let p = READ_BY_CODE.get(usize::from(code)).copied();
            push(
                "read_policy",
                format!("code {code}"),
                p.map(Setting::ReadPolicy),
            );
        }
        if let Some(v) = s.read_error_limit {
            push(
                "read_error_limit",
                v.to_string(),
                Some(Setting::ReadErrorLimit(v)),
            );
        }
        if let Some(ns) = s.read_error_window_ns {
            let raw = format!("{ns} ns");
            push(
                "read_error_window_s",
                raw,
                Some(Setting::ReadErrorWindow { ns }),
            );
        }
        if let Some(ns) = s.io_timeout_ns {
            let raw = format!("{} ms", ns / NS_PER_MS);
            push("io_timeout_ms", raw, Some(Setting::IoTimeout { ns }));
        }
        if let Some(bytes) = s.stripe_cache_bytes {
            push(
                "stripe_cache",
                bytes.to_string(),
                Some(Setting::StripeCache { bytes }),
            );
        }
        out
    }
}

/// The codes the Orion record stores for each policy: the index in its table, one table
/// serving both the encoding and the decoding.
const PRIORITY_BY_CODE: [RebuildPriority; 3] = [
    RebuildPriority::Low,
    RebuildPriority::Normal,
    RebuildPriority::High,
];
const SPARE_BY_CODE: [SparePolicy; 3] = [
    SparePolicy::Dedicated,
    SparePolicy::Shared,
    SparePolicy::None,
];
const READ_BY_CODE: [ReadPolicy; 2] = [ReadPolicy::RoundRobin, ReadPolicy::LeastOutstanding];

fn code_in<T: PartialEq>(table: &[T], value: &T) -> u8 {
    let index = table.iter().position(|t| t == value);
    u8::try_from(index.expect("every policy has a code")).expect("codes fit in a byte")
}

pub(super) fn priority_code(p: RebuildPriority) -> u8 {
    code_in(&PRIORITY_BY_CODE, &p)
}

pub(super) fn spare_code(p: SparePolicy) -> u8 {
    code_in(&SPARE_BY_CODE, &p)
}

pub(super) fn read_code(p: ReadPolicy) -> u8 {
    code_in(&READ_BY_CODE, &p)
}

impl Array {
    /// `raid set NAME key=value`. An unknown key or a value out of its bounds changes
    /// nothing.
    pub fn apply_setting(&self, key: &str, value: &str) -> Result<(), MemberError> {
        let setting = Setting::parse(key, value)?;
        self.apply(setting);
        log::info!(
            "{}: {} set to {}",
            self.name(),
            setting.key(),
            setting.value_text()
        );
        Ok(())
    }

    /// Applies a checked setting; failure detection applies to the members at once.
    pub fn apply(&self, setting: Setting) {
        if self.set_value(setting) {
            // A new spare policy may allow a spare in now.
            self.kick_jobs();
        }
    }

    /// Applies a checked setting without starting anything (assembly applies the record
    /// before the jobs may run). Whether it changed a policy the jobs follow.
    pub(super) fn set_value(&self, setting: Setting) -> bool {
        assert!(
            setting.in_bounds(),
            "settings are checked before they apply"
        );
        let mut p = self.policy();
        match setting {
            Setting::RebuildPriority(v) => p.rebuild_priority = v,
            Setting::RebuildRate { bytes_per_s } => p.rebuild_rate_bytes_per_s = bytes_per_s,
            Setting::SparePolicy(v) => p.spare_policy = v,
            Setting::ReadPolicy(v) => {
                self.set_read_policy(v);
                return false;
            }
            Setting::ReadErrorLimit(n) => p.failure.read_error_limit = n,
            Setting::ReadErrorWindow { ns } => p.failure.read_error_window_ns = ns,
            Setting::IoTimeout { ns } => p.failure.io_timeout_ns = ns,
            Setting::StripeCache { bytes } => {
                self.set_stripe_cache_bytes(bytes as usize);
                return false;
            }
        }
        self.set_policy(p);
        true
    }

    /// The current value of every `raid set` key, in [`SETTING_KEYS`] order.
    pub fn settings(&self) -> Vec<(String, String)> {
        self.current_settings()
            .iter()
            .map(|s| (s.key().to_string(), s.value_text()))
            .collect()
    }

    /// Every key's current value.
    pub fn current_settings(&self) -> Vec<Setting> {
        let p = self.policy();
        vec![
            Setting::RebuildPriority(p.rebuild_priority),
            Setting::RebuildRate {
                bytes_per_s: p.rebuild_rate_bytes_per_s,
            },
            Setting::SparePolicy(p.spare_policy),
            Setting::ReadPolicy(self.read_policy()),
            Setting::ReadErrorLimit(p.failure.read_error_limit),
            Setting::ReadErrorWindow {
                ns: p.failure.read_error_window_ns,
            },
            Setting::IoTimeout {
                ns: p.failure.io_timeout_ns,
            },
            Setting::StripeCache {
                bytes: self.stripe_cache_bytes() as u64,
            },
        ]
    }
}
