//! Medians, spreads and ratios of noisy series. A figure that cannot be computed is NaN (or
//! ±inf), which serde_json writes as `null`; the tables print it as `-`.

use serde::Serialize;

/// The median of the finite values; NaN when there are none.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `a / b`, NaN unless `b` is positive and `a` finite (a ratio to nothing says nothing).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() {
        a / b
    } else {
        f64::NAN
    }
}

/// Median, min and max of the finite values of a series, and how many there were.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(v: &[f64]) -> Self {
        let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        Self {
            median: median(&f),
            min: f.iter().copied().fold(f64::INFINITY, f64::min),
            max: f.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: f.len(),
        }
    }
}

impl Default for Spread {
    /// The spread of an empty series.
    fn default() -> Self {
        Self::of(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_what_was_not_measured() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0, f64::INFINITY]), 5.0);
        assert!(median(&[]).is_nan());
        assert!(median(&[f64::NAN]).is_nan());
    }

    #[test]
    fn a_spread_counts_only_finite_runs_and_an_empty_one_is_null_in_json() {
        let s = Spread::of(&[700.0, f64::NAN, 650.0, 2100.0]);
        assert_eq!(s, Spread { median: 700.0, min: 650.0, max: 2100.0, n: 3 });
        let empty = Spread::of(&[]);
        assert_eq!(empty.n, 0);
        assert_eq!(
            serde_json::to_value(empty).unwrap(),
            serde_json::json!({"median": null, "min": null, "max": null, "n": 0})
        );
    }

    #[test]
    fn a_ratio_to_nothing_or_to_less_than_nothing_is_not_a_number() {
        assert_eq!(ratio(1.0, 4.0), 0.25);
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(1.0, -0.5).is_nan(), "extra CPU below the baseline is noise, not a ratio");
        assert!(ratio(f64::NAN, 1.0).is_nan());
        assert!(ratio(1.0, f64::NAN).is_nan());
    }
}
