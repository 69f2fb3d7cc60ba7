//! Numbers as people read them, one style for tables and HTML pages alike.

/// Seconds as `850 ms`, `2.01 s`, `3m 20s` or `2h 01m`.
pub fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 120.0 {
        format!("{secs:.2} s")
    } else {
        let total = secs.round() as u64;
        if total < 7200 {
            format!("{}m {:02}s", total / 60, total % 60)
        } else {
            format!("{}h {:02}m", total / 3600, (total % 3600) / 60)
        }
    }
}

/// A share as `87.5%`.
pub fn percent(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// Bytes as `812 KB` or `34.2 MB`.
pub fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{} KB", bytes.div_ceil(1024))
    }
}

/// `0.021`, `< 0.001`.
pub fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".to_owned()
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(2.014), "2.01 s");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(7300.0), "2h 01m");
    }

    #[test]
    fn shares_and_sizes() {
        assert_eq!(percent(0.875), "87.5%");
        assert_eq!(size(1000), "1 KB");
        assert_eq!(size(35_861_000), "34.2 MB");
    }
}
