//! SVG line and bar charts for workflow reports ("sales per day").
//!
//! Sits under `workflows/`: a report step hands over an ordered list of
//! `(x label, y value)` points and gets back a self-contained SVG string that
//! can be stored with the run or served as-is. Drawing is done by `plotters`
//! with its SVG backend and no font support: text is emitted as `<text>`
//! elements and sized by the browser, so no system fonts are needed.
//!
//! The x axis is categorical (one slot per point, labels as given, cut at 32 chars,
//! rotated when they would overlap, thinned above [`MAX_ALL_LABELS`] points).
//! The y axis always includes 0 and gets a little headroom.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Fill colour of bars and line markers, exactly as it appears in the SVG `fill` attribute.
pub const SERIES_COLOR: &str = "#1F77B4";
const SERIES_RGB: RGBColor = RGBColor(0x1F, 0x77, 0xB4);
const GRID_BOLD: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const GRID_LIGHT: RGBColor = RGBColor(0xF2, 0xF2, 0xF2);
const TEXT_RGB: RGBColor = RGBColor(0x33, 0x33, 0x33);

/// Most points a single chart accepts.
pub const MAX_POINTS: usize = 1000;
/// Up to this many points every x label is drawn; above it labels are thinned.
pub const MAX_ALL_LABELS: usize = 31;
/// Accepted chart size in pixels, per side.
pub const MIN_SIDE: u32 = 120;
pub const MAX_SIDE: u32 = 8000;
/// Largest absolute y value accepted (keeps spans finite and labels integral).
pub const MAX_ABS_VALUE: f64 = 1e15;
/// Longer x labels are cut and end in an ellipsis.
const MAX_LABEL_CHARS: usize = 32;

const FONT: &str = "sans-serif";
const TITLE_PX: f64 = 22.0;
const LABEL_PX: f64 = 13.0;
const DESC_PX: f64 = 15.0;
const MARGIN: u32 = 12;
const TICK: i32 = 5;

/// Which shape the series is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    Bar,
    Line,
}

/// What to draw: kind, texts and size in pixels.
#[derive(Debug, Clone)]
pub struct ChartSpec {
    pub kind: ChartKind,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub width: u32,
    pub height: u32,
}

impl ChartSpec {
    /// An 800x450 chart with the given title and no axis descriptions.
    pub fn new(kind: ChartKind, title: impl Into<String>) -> Self {
        Self {
            kind,
            title: title.into(),
            x_label: String::new(),
            y_label: String::new(),
            width: 800,
            height: 450,
        }
    }
}

/// Why a chart could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("too many points: {got} (at most {max})")]
    TooManyPoints { got: usize, max: usize },
    #[error("chart size {width}x{height} is outside {MIN_SIDE}..={MAX_SIDE} pixels per side")]
    BadSize { width: u32, height: u32 },
    #[error("value {index} ({label:?}) is not a finite number")]
    NonFinite { index: usize, label: String },
    #[error("value {index} ({label:?}) is too large to chart (|v| > {MAX_ABS_VALUE:e})")]
    TooLarge { index: usize, label: String },
    #[error("drawing the chart failed: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Display>(e: E) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Render `points` ((x label, y value) in order, one bar or marked point each) as an SVG document.
///
/// Empty `points` gives a valid SVG with the title and a "no data" note. Texts are
/// XML-escaped by the backend, so pass them raw.
pub fn render(spec: &ChartSpec, points: &[(String, f64)]) -> Result<String, ChartError> {
    validate(spec, points)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (spec.width, spec.height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        if points.is_empty() {
            draw_empty(&root, spec)?;
        } else {
            draw_chart(&root, spec, points)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn validate(spec: &ChartSpec, points: &[(String, f64)]) -> Result<(), ChartError> {
    let side_ok = |s: u32| (MIN_SIDE..=MAX_SIDE).contains(&s);
    if !side_ok(spec.width) || !side_ok(spec.height) {
        return Err(ChartError::BadSize {
            width: spec.width,
            height: spec.height,
        });
    }
    if points.len() > MAX_POINTS {
        return Err(ChartError::TooManyPoints {
            got: points.len(),
            max: MAX_POINTS,
        });
    }
    let bad = |v: f64| !v.is_finite() || v.abs() > MAX_ABS_VALUE;
    if let Some((index, (label, v))) = points.iter().enumerate().find(|(_, (_, v))| bad(*v)) {
        let label = label.clone();
        return Err(match v.is_finite() {
            true => ChartError::TooLarge { index, label },
            false => ChartError::NonFinite { index, label },
        });
    }
    Ok(())
}

fn text_style(px: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, px).into_font()).color(&TEXT_RGB)
}

fn draw_empty(root: &DrawingArea<SVGBackend, Shift>, spec: &ChartSpec) -> Result<(), ChartError> {
    let area = root
        .margin(MARGIN, MARGIN, MARGIN, MARGIN)
        .titled(&spec.title, text_style(TITLE_PX))
        .map_err(draw_err)?;
    let (w, h) = area.dim_in_pixel();
    let style = text_style(DESC_PX).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text("no data", &style, (w as i32 / 2, h as i32 / 2))
        .map_err(draw_err)
}

/// The y range: always contains 0, with ~8% headroom on the side(s) away from 0.
fn y_range(points: &[(String, f64)]) -> (f64, f64) {
    let (min, max) = points.iter().fold((0.0f64, 0.0f64), |(lo, hi), (_, v)| {
        (lo.min(*v), hi.max(*v))
    });
    let span = max - min;
    if span <= 0.0 {
        return (0.0, 1.0);
    }
    let pad = span * 0.08;
    let lo = if min < 0.0 { min - pad } else { 0.0 };
    let hi = if max > 0.0 || min == 0.0 {
        max + pad
    } else {
        0.0
    };
    (lo, hi)
}

/// Readable y tick text: plain integers for large values, up to 2 decimals otherwise
/// (more only when the whole axis spans less than 1).
fn format_value(v: f64, span: f64) -> String {
    let decimals = if span >= 1.0 {
        2
    } else {
        (2.0 - span.log10().floor()).clamp(2.0, 8.0) as usize
    };
    if v.abs() >= 1000.0 {
        return format!("{:.0}", v.round() + 0.0);
    }
    let s = format!("{:.*}", decimals, v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "-0" => "0".to_string(),
        _ => s.to_string(),
    }
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= MAX_LABEL_CHARS {
        return label.to_string();
    }
    let mut s: String = label.chars().take(MAX_LABEL_CHARS - 1).collect();
    s.push('…');
    s
}

fn draw_chart(
    root: &DrawingArea<SVGBackend, Shift>,
    spec: &ChartSpec,
    points: &[(String, f64)],
) -> Result<(), ChartError> {
    let n = points.len();
    let (y_lo, y_hi) = y_range(points);
    let span = y_hi - y_lo;
    let labels: Vec<String> = points.iter().map(|(l, _)| shorten(l)).collect();
    let label_style = text_style(LABEL_PX);
    let measure = |t: &str| root.estimate_text_size(t, &label_style).map_err(draw_err);

    // Layout: measure texts with the backend's own estimate to size the label areas.
    let (_, desc_h) = root
        .estimate_text_size("Ag", &text_style(DESC_PX))
        .map_err(draw_err)?;
    let (_, label_h) = measure("Ag")?;
    let mut label_w = 0;
    for l in &labels {
        label_w = label_w.max(measure(l)?.0);
    }
    let y_ticks = [y_lo, y_hi, (y_lo + y_hi) / 2.0];
    let mut y_label_w = 0;
    for v in y_ticks {
        y_label_w = y_label_w.max(measure(&format_value(v, span))?.0);
    }
    let desc_space = |s: &str| if s.is_empty() { 0 } else { desc_h + 8 };
    let y_area = y_label_w + 14 + desc_space(&spec.y_label);
    let plot_w = spec.width.saturating_sub(y_area + 3 * MARGIN).max(1);
    let slot = f64::from(plot_w) / n as f64;
    let rotate = f64::from(label_w) + 6.0 > slot;
    let step = if n <= MAX_ALL_LABELS {
        1
    } else {
        let min_gap = f64::from(if rotate { label_h } else { label_w }) * 1.6;
        ((min_gap / slot).ceil() as usize).max(1)
    };
    let label_extent = if rotate {
        label_w.min(spec.height * 2 / 5)
    } else {
        label_h
    };
    let x_area = label_extent + TICK as u32 + 10 + desc_space(&spec.x_label);

    let mut chart = ChartBuilder::on(root)
        .margin(MARGIN)
        .margin_right(2 * MARGIN)
        .caption(&spec.title, text_style(TITLE_PX))
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(0.0..n as f64, y_lo..y_hi)
        .map_err(draw_err)?;

    let plot_h = chart.plotting_area().dim_in_pixel().1;
    let fmt = |v: &f64| format_value(*v, span);
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .x_labels(0)
        .y_labels((plot_h as usize / 40).clamp(3, 10))
        .y_label_formatter(&fmt)
        .y_label_style(label_style.clone())
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .max_light_lines(1)
        .axis_style(TEXT_RGB)
        .axis_desc_style(text_style(DESC_PX));
    if !spec.x_label.is_empty() {
        mesh.x_desc(spec.x_label.as_str());
    }
    if !spec.y_label.is_empty() {
        mesh.y_desc(spec.y_label.as_str());
    }
    mesh.draw().map_err(draw_err)?;

    let centre = |i: usize| i as f64 + 0.5;
    match spec.kind {
        ChartKind::Bar => {
            let bars = points.iter().enumerate().map(|(i, (_, v))| {
                let x = i as f64;
                Rectangle::new([(x + 0.15, 0.0), (x + 0.85, *v)], SERIES_RGB.filled())
            });
            chart.draw_series(bars).map_err(draw_err)?;
        }
        ChartKind::Line => {
            let line = points.iter().enumerate().map(|(i, (_, v))| (centre(i), *v));
            chart
                .draw_series(LineSeries::new(line, SERIES_RGB.stroke_width(2)))
                .map_err(draw_err)?;
            let radius = (slot / 4.0).clamp(1.0, 4.0).round() as u32;
            let marks = points
                .iter()
                .enumerate()
                .map(|(i, (_, v))| Circle::new((centre(i), *v), radius, SERIES_RGB.filled()));
            chart.draw_series(marks).map_err(draw_err)?;
        }
    }

    // Categorical x labels, drawn by hand so rotated ones hang below the axis.
    let tick_style = ShapeStyle::from(&TEXT_RGB);
    let anchor = if rotate {
        Pos::new(HPos::Right, VPos::Center)
    } else {
        Pos::new(HPos::Center, VPos::Top)
    };
    let mut style = label_style.pos(anchor);
    if rotate {
        style = style.transform(FontTransform::Rotate270);
    }
    for (i, label) in labels.iter().enumerate().step_by(step) {
        let (x, y) = chart.backend_coord(&(centre(i), y_lo));
        root.draw(&PathElement::new(vec![(x, y), (x, y + TICK)], tick_style))
            .map_err(draw_err)?;
        root.draw_text(label, &style, (x, y + TICK + 4))
            .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(vals: &[f64]) -> Vec<(String, f64)> {
        let day = |i: usize| format!("2026-11-{:02}", i + 1);
        vals.iter().enumerate().map(|(i, v)| (day(i), *v)).collect()
    }

    fn week() -> Vec<(String, f64)> {
        series(&[120.0, 98.5, 143.25, 0.0, 87.0, 150.0, 133.0])
    }

    /// (svg, trimmed <text> contents, count of `tag` filled with SERIES_COLOR)
    fn draw(spec: &ChartSpec, pts: &[(String, f64)], tag: &str) -> (String, Vec<String>, usize) {
        let svg = render(spec, pts).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let nodes = || doc.descendants();
        let texts = nodes().filter(|n| n.has_tag_name("text"));
        let texts = texts
            .map(|n| n.text().unwrap_or("").trim().to_string())
            .collect();
        let fill = Some(SERIES_COLOR);
        let count = nodes().filter(|n| n.has_tag_name(tag) && n.attribute("fill") == fill);
        let count = count.count();
        (svg, texts, count)
    }

    fn has(texts: &[String], want: &str) -> bool {
        texts.iter().any(|t| t == want)
    }

    #[test]
    fn bar_chart_has_one_rect_per_day_and_all_labels() {
        let RGBColor(r, g, b) = SERIES_RGB;
        assert_eq!(SERIES_COLOR, format!("#{r:02X}{g:02X}{b:02X}"));
        let mut spec = ChartSpec::new(ChartKind::Bar, "Sales per day");
        spec.x_label = "day".into();
        spec.y_label = "sales (EUR)".into();
        let (_, t, rects) = draw(&spec, &week(), "rect");
        assert_eq!(rects, 7);
        for want in ["Sales per day", "day", "sales (EUR)", "0"] {
            assert!(has(&t, want), "missing {want}: {t:?}");
        }
        assert!(week().iter().all(|(day, _)| has(&t, day)), "{t:?}");
    }

    #[test]
    fn line_chart_has_circles_and_a_line() {
        let spec = ChartSpec::new(ChartKind::Line, "Sales per day");
        let (svg, _, circles) = draw(&spec, &week(), "circle");
        assert_eq!(circles, 7);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = doc.descendants().filter(|n| {
            (n.has_tag_name("polyline") || n.has_tag_name("path"))
                && n.attribute("stroke") == Some(SERIES_COLOR)
        });
        assert_eq!(lines.count(), 1);
        assert_eq!(draw(&spec, &week(), "rect").2, 0);
    }

    #[test]
    fn empty_points_give_valid_svg_with_no_data() {
        let spec = ChartSpec::new(ChartKind::Bar, "Nothing yet");
        let (_, t, _) = draw(&spec, &[], "rect");
        assert!(has(&t, "no data") && has(&t, "Nothing yet"), "{t:?}");
    }

    #[test]
    fn texts_are_xml_escaped() {
        let title = r#"Sales <&> "quoted" 'single'"#;
        let mut spec = ChartSpec::new(ChartKind::Bar, title);
        spec.y_label = "a<b".into();
        let pts = vec![("x&y".to_string(), 1.0), ("<day>".to_string(), 2.0)];
        let (svg, t, _) = draw(&spec, &pts, "rect");
        assert!(!svg.contains("<&>") && !svg.contains("&amp;amp;"));
        for want in [title, "a<b", "x&y", "<day>"] {
            assert!(has(&t, want), "missing {want}: {t:?}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        let spec = ChartSpec::new(ChartKind::Line, "t");
        let err = |spec: &ChartSpec, pts: &[(String, f64)]| render(spec, pts).unwrap_err();
        let many = series(&[1.0; MAX_POINTS + 1]);
        assert!(matches!(
            err(&spec, &many),
            ChartError::TooManyPoints { .. }
        ));
        let nan = err(&spec, &series(&[1.0, f64::NAN]));
        assert!(matches!(nan, ChartError::NonFinite { index: 1, .. }));
        let inf = err(&spec, &series(&[f64::NEG_INFINITY]));
        assert!(matches!(inf, ChartError::NonFinite { index: 0, .. }));
        let big = err(&spec, &series(&[1e300]));
        assert!(matches!(big, ChartError::TooLarge { .. }));
        let tiny = ChartSpec { width: 10, ..spec };
        assert!(matches!(err(&tiny, &[]), ChartError::BadSize { .. }));
    }

    #[test]
    fn negative_values_draw_one_bar_each() {
        let spec = ChartSpec::new(ChartKind::Bar, "Net");
        assert_eq!(
            draw(&spec, &series(&[-40.0, 25.0, -5.5, 0.0, 80.0]), "rect").2,
            5
        );
        assert_eq!(draw(&spec, &series(&[-4.0, -2.5, -1e6]), "rect").2, 3);
        assert_eq!(draw(&spec, &series(&[0.0, 0.0]), "rect").2, 2);
    }

    #[test]
    fn month_shows_every_label_rotated_and_year_thins_them() {
        let spec = ChartSpec::new(ChartKind::Line, "Month");
        let month = series(&[3.0; 31]);
        let (svg, t, _) = draw(&spec, &month, "circle");
        assert!(month.iter().all(|(day, _)| has(&t, day)), "{t:?}");
        assert_eq!(svg.matches("rotate(270").count(), 31);
        let year: Vec<_> = (0..365).map(|i| (format!("day-{i:03}"), 1.0)).collect();
        let (_, t, rects) = draw(&ChartSpec::new(ChartKind::Bar, "Year"), &year, "rect");
        assert_eq!(rects, 365);
        let shown = t.iter().filter(|s| s.starts_with("day-")).count();
        assert!(shown > 5 && shown < 100, "{shown} labels shown");
    }

    #[test]
    fn y_labels_are_readable() {
        assert_eq!(format_value(0.30000000000000004, 10.0), "0.3");
        assert_eq!(format_value(-0.0001, 10.0), "0");
        assert_eq!(format_value(12500.0, 20000.0), "12500");
        assert_eq!(format_value(2.5, 5.0), "2.5");
        assert_eq!(format_value(100.0, 150.0), "100");
        assert_eq!(format_value(0.005, 0.02), "0.005");
    }
}
