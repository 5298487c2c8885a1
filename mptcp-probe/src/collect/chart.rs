//! SVG charts for the collector's pages, drawn on the server (no script, no external asset):
//! horizontal bars of shares, and shares over time as lines.

use maud::{html, Markup};

/// Colours of the series, in order (distinct in print and for the common colour blindnesses).
const PALETTE: [&str; 6] = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"];

/// A bar: its label, its share (0..=1) and the count behind it.
pub struct Bar {
    pub label: String,
    pub share: f64,
    pub count: i64,
}

fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// Horizontal bars, one a row, longest first as given.
pub fn bars(title: &str, rows: &[Bar]) -> Markup {
    const ROW: f64 = 22.0;
    const LABEL: f64 = 210.0;
    const WIDTH: f64 = 640.0;
    const BAR: f64 = WIDTH - LABEL - 110.0;
    let height = ROW * rows.len().max(1) as f64 + 8.0;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label=(title)
            width=(WIDTH) height=(height) viewBox={ "0 0 " (WIDTH) " " (height) } {
            title { (title) }
            @if rows.is_empty() {
                text x="0" y="16" { "nothing yet" }
            }
            @for (i, r) in rows.iter().enumerate() {
                @let y = ROW * i as f64 + 4.0;
                @let w = (BAR * r.share.clamp(0.0, 1.0)).max(1.0);
                g class="bar" data-label=(r.label) data-count=(r.count) {
                    text x=(LABEL - 8.0) y=(y + 14.0) text-anchor="end" { (r.label) }
                    rect x=(LABEL) y=(y) width=(w) height=(ROW - 6.0) fill=(PALETTE[0]) {}
                    text x=(LABEL + w + 6.0) y=(y + 14.0) { (percent(r.share)) " (" (r.count) ")" }
                }
            }
        }
    }
}

/// A series of shares over time: its name and one value per point of the x axis.
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// The runs of points with a value (not NaN), as indices: each is one stretch of line.
fn runs(values: &[f64]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current = Vec::new();
    for (i, v) in values.iter().enumerate() {
        if v.is_finite() {
            current.push(i);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Lines of shares (0..=1) over the labelled points of the x axis (dates), with a legend; a
/// point without a value (NaN) is a gap.
pub fn lines(title: &str, x_labels: &[String], series: &[Series]) -> Markup {
    const WIDTH: f64 = 640.0;
    const HEIGHT: f64 = 240.0;
    const LEFT: f64 = 48.0;
    const RIGHT: f64 = 16.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 36.0;
    let legend = 18.0 * series.len() as f64;
    let total = HEIGHT + legend;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = x_labels.len();
    let x = |i: usize| if n <= 1 { LEFT + plot_w / 2.0 } else { LEFT + plot_w * i as f64 / (n - 1) as f64 };
    let y = |v: f64| TOP + plot_h * (1.0 - v.clamp(0.0, 1.0));
    // At most about six labels on the axis.
    let step = n.div_ceil(6).max(1);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label=(title)
            width=(WIDTH) height=(total) viewBox={ "0 0 " (WIDTH) " " (total) } {
            title { (title) }
            @for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(tick)) y2=(y(tick)) stroke="#ddd" {}
                text x=(LEFT - 6.0) y=(y(tick) + 4.0) text-anchor="end" { (format!("{:.0} %", tick * 100.0)) }
            }
            @for (i, l) in x_labels.iter().enumerate() {
                @if i % step == 0 || i + 1 == n {
                    text x=(x(i)) y=(HEIGHT - BOTTOM + 18.0) text-anchor="middle" { (l) }
                }
            }
            @if n == 0 {
                text x=(LEFT) y=(TOP + 16.0) { "nothing yet" }
            }
            @for (k, s) in series.iter().enumerate() {
                @let colour = PALETTE[k % PALETTE.len()];
                g class="series" data-name=(s.name) {
                    @for run in runs(&s.values) {
                        polyline points=(run.iter().map(|i| format!("{:.1},{:.1}", x(*i), y(s.values[*i]))).collect::<Vec<_>>().join(" ")) fill="none" stroke=(colour) stroke-width="2" {}
                    }
                    @for (i, v) in s.values.iter().enumerate() {
                        @if v.is_finite() {
                            circle cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*v))) r="2.5" fill=(colour) {}
                        }
                    }
                    rect x=(LEFT) y=(HEIGHT + 18.0 * k as f64) width="12" height="12" fill=(colour) {}
                    text x=(LEFT + 18.0) y=(HEIGHT + 18.0 * k as f64 + 11.0) { (s.name) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_a_mark_per_value_and_escape_their_labels() {
        let b = bars(
            "verdicts",
            &[
                Bar { label: "mptcp_ok".into(), share: 0.75, count: 3 },
                Bar { label: "<script>".into(), share: 0.25, count: 1 },
            ],
        )
        .into_string();
        assert!(b.starts_with("<svg"), "{b}");
        assert_eq!(b.matches("<rect").count(), 2);
        assert!(b.contains("75.0 % (3)"));
        assert!(!b.contains("<script>") && b.contains("&lt;script&gt;"));
        let l = lines(
            "over time",
            &["2026-11-30".into(), "2026-12-01".into()],
            &[Series { name: "usable".into(), values: vec![0.5, 1.0] }],
        )
        .into_string();
        assert_eq!(l.matches("<circle").count(), 2);
        assert!(l.contains("2026-12-01") && l.contains("usable"));
        assert!(bars("none", &[]).into_string().contains("nothing yet"));
        let gap = lines(
            "gap",
            &["a".into(), "b".into(), "c".into(), "d".into()],
            &[Series { name: "s".into(), values: vec![0.5, f64::NAN, 1.0, 0.25] }],
        )
        .into_string();
        assert_eq!(gap.matches("<polyline").count(), 2, "a gap splits the line: {gap}");
        assert_eq!(gap.matches("<circle").count(), 3);
    }
}
