//! Small inline SVG charts: a line chart with an optional log scale and labelled segments, and
//! a bar chart with an optional reference line. Plain strings, so the report needs no scripts,
//! fonts or files beside it.

use std::fmt::Write;

/// Width and height of every chart in SVG units; the page scales them.
const W: f64 = 720.0;
const H: f64 = 300.0;
/// Margins: left holds the y tick labels, bottom the x labels.
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 56.0;

/// Colours of successive series, distinguishable for the common kinds of colour blindness.
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A number as a short tick label.
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// About five round ticks covering `lo..=hi`.
fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    // Multiples of the step, not a running sum, so errors do not accumulate.
    let first = (lo / step - 1e-9).ceil();
    (0..12)
        .map(|i| (first + f64::from(i)) * step)
        .take_while(|&t| t <= hi + step * 1e-9)
        .map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t })
        .collect()
}

/// One line of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// `(x, y)` points in x order; non-finite values break the line.
    pub points: Vec<(f64, f64)>,
}

/// A labelled stretch of the x axis (a training stage).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Label shown at the top.
    pub name: String,
    /// First x.
    pub start: f64,
    /// Last x.
    pub end: f64,
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" font-family="sans-serif" font-size="12"><title>{t}</title><rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/>"##,
        t = escape(title)
    );
}

/// A line chart; `log_y` plots the y axis on a log scale (points with y <= 0 are dropped).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    segments: &[Segment],
    log_y: bool,
) -> String {
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter().filter(|p| usable(p)));
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(ty(y));
        y1 = y1.max(ty(y));
    }
    let mut out = String::new();
    open_svg(&mut out, title);
    if x0 > x1 {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    if x1 == x0 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        let pad = if y0 == 0.0 { 1.0 } else { y0.abs() * 0.1 };
        y0 -= pad;
        y1 += pad;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (if log_y { y0 } else { y0 - pad }, y1 + pad);
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let py = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);

    // Stage backgrounds first, so lines draw over them.
    let mut labels_end = f64::MIN;
    for (i, s) in segments.iter().enumerate() {
        let (a, b) = (px(s.start.max(x0)), px(s.end.min(x1)));
        if i % 2 == 1 {
            let _ = write!(
                out,
                r##"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{}" fill="#f2f2f2"/>"##,
                (b - a).max(1.0),
                H - TOP - BOTTOM
            );
        }
        // Kept inside the chart: a short last stage would push its label off the edge.
        let label_x = ((a + b) / 2.0).clamp(LEFT + 30.0, W - RIGHT - 30.0);
        // About 6.5 units per character at this size; a label that would overlap the previous
        // one is left out (its shading still shows the stage).
        let half = 3.25 * s.name.chars().count() as f64;
        if label_x - half < labels_end + 4.0 {
            continue;
        }
        labels_end = label_x + half;
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            label_x,
            TOP - 6.0,
            escape(&s.name)
        );
    }
    axes(&mut out, x_label, y_label);
    // y ticks: decades on a log scale, round numbers otherwise.
    let yticks: Vec<(f64, String)> = if log_y {
        let (lo, hi) = (y0.floor() as i32, y1.ceil() as i32);
        let inside = |t: &(f64, String)| t.0 >= y0 && t.0 <= y1;
        let decades: Vec<(f64, String)> = (lo..=hi)
            .map(|e| (f64::from(e), tick_label(10f64.powi(e))))
            .filter(inside)
            .collect();
        if decades.len() >= 3 {
            decades
        } else {
            // Less than two decades visible: label the 2x and 5x steps too.
            (lo..=hi)
                .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
                .map(|v| (v.log10(), tick_label(v)))
                .filter(inside)
                .collect()
        }
    } else {
        linear_ticks(y0, y1)
            .into_iter()
            .map(|v| (v, tick_label(v)))
            .collect()
    };
    for (v, label) in yticks {
        y_tick(&mut out, py(v), &label);
    }
    for v in linear_ticks(x0, x1) {
        let x = px(v);
        let _ = write!(
            out,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 4.0,
            H - BOTTOM + 17.0,
            tick_label(v)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for p in &s.points {
            if !usable(p) {
                pen_down = false;
                continue;
            }
            let _ = write!(
                path,
                "{}{:.1},{:.1} ",
                if pen_down { "L" } else { "M" },
                px(p.0),
                py(ty(p.1))
            );
            pen_down = true;
        }
        let _ = write!(
            out,
            r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.trim_end()
        );
        // Legend, top right, one row per series, on white so lines passing under stay readable.
        let ly = TOP + 14.0 + 16.0 * i as f64;
        let lx = W - RIGHT - 150.0;
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="146" height="16" fill="#fff" fill-opacity="0.85"/>"##,
            lx - 4.0,
            ly - 8.0
        );
        let _ = write!(
            out,
            r#"<line x1="{lx}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    out.push_str("</svg>");
    out
}

/// A grid line across the plot at height `y`, labelled at the y axis.
fn y_tick(out: &mut String, y: f64, label: &str) {
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
        W - RIGHT,
        LEFT - 6.0,
        y + 4.0
    );
}

fn axes(out: &mut String, x_label: &str, y_label: &str) {
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}" stroke="#333"/><line x1="{LEFT}" x2="{r}" y1="{b}" y2="{b}" stroke="#333"/><text x="{cx}" y="{xl}" text-anchor="middle">{x}</text><text transform="translate(14 {cy}) rotate(-90)" text-anchor="middle">{y}</text>"##,
        b = H - BOTTOM,
        r = W - RIGHT,
        cx = (LEFT + W - RIGHT) / 2.0,
        xl = H - 10.0,
        cy = (TOP + H - BOTTOM) / 2.0,
        x = escape(x_label),
        y = escape(y_label),
    );
}

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Label under the bar.
    pub label: String,
    /// Height.
    pub value: f64,
    /// Text above the bar (empty for none).
    pub note: String,
}

/// A bar chart from zero; `reference` draws a dashed horizontal line with its label (a maximum).
pub fn bar_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[Bar],
    reference: Option<(f64, &str)>,
) -> String {
    let mut out = String::new();
    open_svg(&mut out, title);
    let top = bars
        .iter()
        .map(|b| b.value)
        .chain(reference.map(|r| r.0))
        .filter(|v| v.is_finite())
        .fold(0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let py = |y: f64| TOP + (1.0 - y / top) * (H - TOP - BOTTOM);
    axes(&mut out, x_label, y_label);
    for v in linear_ticks(0.0, top) {
        y_tick(&mut out, py(v), &tick_label(v));
    }
    let n = bars.len().max(1) as f64;
    let slot = (W - LEFT - RIGHT) / n;
    let width = (slot * 0.8).max(1.0);
    // Too many bars for every label: label about twenty of them.
    let every = (bars.len() / 20).max(1);
    for (i, b) in bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - width) / 2.0;
        let value = if b.value.is_finite() {
            b.value.max(0.0)
        } else {
            0.0
        };
        let y = py(value);
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
            (H - BOTTOM - y).max(0.0),
            COLOURS[0],
            escape(&b.label),
            tick_label(b.value)
        );
        if i % every == 0 {
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + width / 2.0,
                H - BOTTOM + 17.0,
                escape(&b.label)
            );
        }
        if !b.note.is_empty() {
            // Inside the top of a tall bar, where no reference line can cross it; above a short one.
            let inside = H - BOTTOM - y > 22.0;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="{}">{}</text>"##,
                x + width / 2.0,
                if inside { y + 14.0 } else { y - 4.0 },
                if inside { "#fff" } else { "#222" },
                escape(&b.note)
            );
        }
    }
    if let Some((v, label)) = reference {
        let y = py(v);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#d55e00" stroke-dasharray="6 4" stroke-width="1.5"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d55e00">{}</text>"##,
            W - RIGHT,
            W - RIGHT,
            // Above the plot area: bars reach up to the line and would hide a label beside it.
            TOP - 8.0,
            escape(&format!("- - {label}"))
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_controls() {
        assert_eq!(
            escape("<a & 'b' \"c\">"),
            "&lt;a &amp; &#39;b&#39; &quot;c&quot;&gt;"
        );
        assert_eq!(escape("x\u{1}y"), "x\u{FFFD}y");
    }

    #[test]
    fn ticks_are_round() {
        let close = |got: Vec<f64>, want: &[f64]| {
            assert_eq!(got.len(), want.len(), "{got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "{got:?}");
            }
        };
        close(linear_ticks(0.0, 1.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        close(linear_ticks(0.0, 4.4), &[0.0, 1.0, 2.0, 3.0, 4.0]);
        close(linear_ticks(3.0, 27.0), &[5.0, 10.0, 15.0, 20.0, 25.0]);
        close(
            linear_ticks(-0.3, 0.3),
            &[-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3],
        );
        assert_eq!(tick_label(0.25), "0.25");
        assert_eq!(tick_label(2.0), "2");
        assert_eq!(tick_label(1500.0), "1500");
        assert_eq!(tick_label(0.0001), "1e-4");
    }

    #[test]
    fn line_chart_draws_each_series_and_skips_bad_points() {
        let s = vec![
            Series {
                name: "train <loss>".into(),
                points: vec![(1.0, 1.0), (2.0, 0.5), (3.0, f64::NAN), (4.0, 0.1)],
            },
            Series {
                name: "val".into(),
                points: vec![(1.0, 2.0), (4.0, 0.0)],
            },
        ];
        let svg = line_chart("t", "epoch", "loss", &s, &[], true);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("train &lt;loss&gt;"));
        // NaN breaks the first line into two pieces; y = 0 cannot be drawn on a log scale.
        let first = svg.split("<path d=\"").nth(1).unwrap();
        let d = first.split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 2, "{d}");
        let second = svg.split("<path d=\"").nth(2).unwrap();
        assert_eq!(
            second
                .split('"')
                .next()
                .unwrap()
                .matches(['M', 'L'])
                .count(),
            1
        );
    }

    #[test]
    fn log_scale_within_a_decade_gets_intermediate_ticks() {
        let s = [Series {
            name: "mse".into(),
            points: vec![(1.0, 3.0), (2.0, 14.0)],
        }];
        let svg = line_chart("t", "x", "y", &s, &[], true);
        for label in [">5<", ">10<"] {
            assert!(svg.contains(label), "missing tick {label}");
        }
    }

    #[test]
    fn crowded_stage_labels_are_dropped_not_overlapped() {
        let s = [Series {
            name: "mse".into(),
            points: (1..=100)
                .map(|x| (f64::from(x), 1.0 / f64::from(x)))
                .collect(),
        }];
        let seg = |name: &str, start: f64, end: f64| Segment {
            name: name.into(),
            start,
            end,
        };
        let segments = [
            seg("first-stage", 1.0, 90.0),
            seg("fine-tune", 91.0, 95.0),
            seg("refine", 96.0, 100.0),
        ];
        let svg = line_chart("t", "x", "y", &s, &segments, true);
        assert!(svg.contains(">first-stage<"));
        assert!(svg.contains(">fine-tune<"));
        assert!(!svg.contains(">refine<"), "overlaps fine-tune");
        // Every stage keeps its shading: the odd ones are drawn.
        assert_eq!(svg.matches("fill=\"#f2f2f2\"").count(), 1);
    }

    #[test]
    fn empty_chart_says_so() {
        assert!(line_chart("t", "x", "y", &[], &[], false).contains("no data"));
    }

    #[test]
    fn bar_chart_has_a_bar_per_value_and_the_reference() {
        let bars: Vec<Bar> = (0..3)
            .map(|i| Bar {
                label: format!("{i}"),
                value: f64::from(i),
                note: String::new(),
            })
            .collect();
        let svg = bar_chart("t", "x", "y", &bars, Some((4.0, "max 4")));
        assert_eq!(
            svg.matches("<rect x=").count(),
            1 + 3,
            "background and three bars"
        );
        assert!(svg.contains("max 4"));
        assert!(svg.contains("stroke-dasharray"));
    }
}
