//! A small line-chart description and its rendering with plotters to SVG and PNG. Text is
//! drawn with DejaVu Sans, embedded in the binary, so the PNGs look the same on every
//! machine and no system font or fontconfig is needed.

use std::sync::OnceLock;

use ab_glyph::FontRef;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::glyph_text::GlyphText;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); licence in `assets/DejaVuSans-LICENSE`.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Image width in pixels (SVG and PNG), the legend's 300 included.
pub const WIDTH: u32 = 1200;
/// Image height in pixels (SVG and PNG).
pub const HEIGHT: u32 = 650;
const LEGEND_WIDTH: u32 = 300;

fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).map_err(|_| "the embedded font does not parse".to_string()))
        .clone()
}

/// Line styles told apart without colour too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    /// An unbroken line.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dashes.
    Dotted,
}

/// One estimate on a chart; non-finite values are not drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Position on the x axis, in the axis's own units (already 1-based for block layers).
    pub x: f64,
    /// The estimate (log10 of it on a [`Chart::log10_y`] chart).
    pub y: f64,
    /// The 95% interval, drawn as a band (or error bar with markers); NaN for none.
    pub lo: f64,
    /// Upper end of the interval; NaN for none.
    pub hi: f64,
}

/// A shape drawn at every point of a series. Hollow shapes are drawn larger than filled
/// ones, so two series with the same values still show both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// No marker (a lone point or an unjoined series still gets a circle).
    None,
    /// Filled circle.
    Circle,
    /// Hollow square, drawn larger.
    Square,
    /// Filled triangle.
    Triangle,
    /// Hollow diamond, drawn larger.
    Diamond,
}

/// One labelled curve or set of points on a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The legend's text.
    pub label: String,
    /// Line, marker and band colour.
    pub color: RGBColor,
    /// The line's dash pattern.
    pub dash: Dash,
    /// The points, in x order.
    pub points: Vec<Point>,
    /// Shade the interval between `lo` and `hi` as a translucent band.
    pub band: bool,
    /// The shape drawn at each point.
    pub marker: Marker,
    /// Whiskers from `lo` to `hi` at every point.
    pub error_bars: bool,
    /// Join the points; off for discrete x values, where a line would suggest values between.
    pub line: bool,
    /// Line width in pixels.
    pub width: u32,
}

impl Series {
    /// A curve over layers: a line, optionally with its interval as a band.
    pub fn curve(label: &str, color: RGBColor, dash: Dash, points: Vec<Point>, band: bool) -> Series {
        let width = if dash == Dash::Solid { 3 } else { 2 };
        Series { label: label.into(), color, dash, points, band, marker: Marker::None, error_bars: false, line: true, width }
    }

    /// Estimates at discrete x values: markers with interval whiskers, not joined.
    pub fn points(label: &str, color: RGBColor, marker: Marker, points: Vec<Point>) -> Series {
        Series { label: label.into(), color, dash: Dash::Solid, points, band: false, marker, error_bars: true, line: false, width: 2 }
    }

    /// The series with `marker` at each point.
    pub fn with_marker(mut self, marker: Marker) -> Series {
        self.marker = marker;
        self
    }

    /// The series with a line `width` pixels wide (wider lines are drawn beneath narrower ones).
    pub fn with_width(mut self, width: u32) -> Series {
        self.width = width;
        self
    }
}

/// A horizontal reference line (a baseline), optionally with its interval as a band.
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    /// The legend's text.
    pub label: String,
    /// Line and band colour.
    pub color: RGBColor,
    /// The line's dash pattern.
    pub dash: Dash,
    /// The reference value; not drawn when not finite.
    pub y: f64,
    /// (low, high) of its interval, shaded across the whole x range.
    pub band: Option<(f64, f64)>,
}

/// A complete figure: a line chart with a legend and a note on the right.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The title above the plot.
    pub title: String,
    /// The x axis's description.
    pub x_label: String,
    /// The y axis's description.
    pub y_label: String,
    /// The curves, in legend order (drawn solid and wide first).
    pub series: Vec<Series>,
    /// Reference lines, listed in the legend after the series.
    pub hlines: Vec<HLine>,
    /// Values are log10 of the quantity; tick labels show 10^v.
    pub log10_y: bool,
    /// Draw y = 0.
    pub zero_line: bool,
    /// A note under the legend (e.g. what the bands are).
    pub note: String,
    /// The only x values to label (discrete sources); `None`: evenly spaced integers.
    pub x_ticks: Option<Vec<f64>>,
}

// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.

/// Okabe–Ito blue: subject positions and MHSA in the figures.
pub const BLUE: RGBColor = RGBColor(0, 114, 178);
/// Okabe–Ito orange.
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
/// Okabe–Ito bluish green.
pub const GREEN: RGBColor = RGBColor(0, 158, 115);
/// Okabe–Ito vermilion: non-subject positions and MLPs in the figures.
pub const VERMILION: RGBColor = RGBColor(213, 94, 0);
/// Okabe–Ito reddish purple.
pub const PURPLE: RGBColor = RGBColor(204, 121, 167);
/// Okabe–Ito sky blue.
pub const SKY: RGBColor = RGBColor(86, 180, 233);
/// Dark grey (not Okabe–Ito): reference lines, unknown sets, the note under the legend.
pub const GREY: RGBColor = RGBColor(90, 90, 90);
/// The six Okabe–Ito colours above.
pub const PALETTE: [RGBColor; 6] = [BLUE, VERMILION, GREEN, ORANGE, PURPLE, SKY];

/// The chart as an SVG document (no XML prolog, so it can be inlined in HTML); `Err` carries
/// the renderer's message.
pub fn render_svg(chart: &Chart) -> Result<String, String> {
    register_font()?;
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(s)
}

/// The chart as an 8-bit RGB PNG of [`WIDTH`] × [`HEIGHT`], text drawn with the embedded font.
pub fn render_png(chart: &Chart) -> Result<Vec<u8>, String> {
    register_font()?;
    let font = FontRef::try_from_slice(FONT).map_err(|e| format!("the embedded font does not parse: {e}"))?;
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let inner = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT));
        let root = GlyphText { inner, font }.into_drawing_area();
        draw(&root, chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| e.to_string())?;
        w.write_image_data(&rgb).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// The smallest y span shown. Linear charts plot percentages and log charts decades, so a
/// flat curve gets one percentage point (or one decade) around it instead of an axis blown
/// up around rounding noise.
const MIN_SPAN: f64 = 1.0;

/// The y range over everything drawn, at least [`MIN_SPAN`] wide, padded by 6%.
fn y_range(c: &Chart) -> (f64, f64) {
    let mut ys: Vec<f64> = Vec::new();
    for s in &c.series {
        for p in &s.points {
            ys.extend([p.y].into_iter().filter_map(finite));
            if s.band || s.error_bars {
                ys.extend([p.lo, p.hi].into_iter().filter_map(finite));
            }
        }
    }
    for h in &c.hlines {
        ys.extend(finite(h.y));
        if let Some((lo, hi)) = h.band {
            ys.extend([lo, hi].into_iter().filter_map(finite));
        }
    }
    if c.zero_line {
        ys.push(0.0);
    }
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let (lo, hi) = widen(lo, hi, MIN_SPAN);
    let pad = 0.06 * (hi - lo);
    (lo - pad, hi + pad)
}

/// `lo..hi` widened about its centre to at least `min_span`; data that are all >= 0 (rates)
/// keep a lower bound >= 0.
fn widen(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    if hi - lo >= min_span {
        return (lo, hi);
    }
    let centre = (lo + hi) / 2.0;
    let (a, b) = (centre - min_span / 2.0, centre + min_span / 2.0);
    if lo >= 0.0 && a < 0.0 {
        (0.0, min_span)
    } else {
        (a, b)
    }
}

fn x_range(c: &Chart) -> (f64, f64) {
    let xs: Vec<f64> = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.x)).filter(|x| x.is_finite()).collect();
    let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    (lo - 0.5, hi + 0.5)
}

/// The smallest of 1, 2, 5 × 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw * (1.0 - 1e-9)).unwrap_or(10.0 * mag)
}

/// Round multiples of a 1/2/5 step inside `lo..=hi`, at most about `target` of them.
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    multiples(lo, hi, nice_step((hi - lo) / target.max(1) as f64))
}

/// Integer ticks for layer axes: every integer, or every 2nd/5th/10th on deep models.
fn integer_ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    multiples(lo, hi, nice_step((hi - lo) / target.max(1) as f64).max(1.0))
}

/// The multiples of `step` inside `lo..=hi`. Each is an integer times the step, rounded to
/// the step's decimals, so there is no accumulated float noise, and zero is +0.0.
fn multiples(lo: f64, hi: f64, step: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite() && step > 0.0) || hi < lo {
        return Vec::new();
    }
    let scale = 10f64.powi(decimals_of(step) as i32);
    let (first, last) = ((lo / step - 1e-9).ceil() as i64, (hi / step + 1e-9).floor() as i64);
    (first..=last).map(|i| if i == 0 { 0.0 } else { (i as f64 * step * scale).round() / scale }).collect()
}

/// Decimals needed to write `v` exactly (up to 12).
fn decimals_of(v: f64) -> usize {
    (0..12)
        .find(|&d| {
            let scaled = v * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() <= 1e-6 * scaled.abs()
        })
        .unwrap_or(12)
}

/// Labels for `ticks`, all with the same number of decimals: the fewest that write every
/// tick exactly, which also keeps distinct ticks distinct. Zero is "0", never "-0".
pub fn tick_labels(ticks: &[f64]) -> Vec<String> {
    let decimals = ticks.iter().map(|t| decimals_of(*t)).max().unwrap_or(0);
    ticks
        .iter()
        .map(|t| {
            let label = format!("{:.*}", decimals, t);
            match label.strip_prefix('-') {
                Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
                _ => label,
            }
        })
        .collect()
}

/// Labels of a log10 axis's ticks (integer decades): 10^k written out.
fn decade_labels(ticks: &[f64]) -> Vec<String> {
    ticks.iter().map(|t| tick_labels(&[10f64.powi(t.round() as i32)]).remove(0)).collect()
}

/// The label of the tick nearest `v` (the mesh asks for exactly the ticks it was given).
fn label_of(ticks: &[f64], labels: &[String], v: f64) -> String {
    ticks.iter().zip(labels).min_by(|a, b| (a.0 - v).abs().total_cmp(&(b.0 - v).abs())).map(|(_, l)| l.clone()).unwrap_or_default()
}

fn dash_pattern(d: Dash) -> Option<(i32, i32)> {
    match d {
        Dash::Solid => None,
        Dash::Dashed => Some((12, 7)),
        Dash::Dotted => Some((3, 5)),
    }
}

/// Splits a pixel polyline into dash segments (plotters' own dashed series restarts the
/// pattern at every vertex, which on dense curves looks solid).
fn dashed_segments(points: &[(i32, i32)], on: i32, off: i32) -> Vec<Vec<(i32, i32)>> {
    let mut out = Vec::new();
    let mut current: Vec<(i32, i32)> = Vec::new();
    let (mut drawing, mut left) = (true, f64::from(on));
    for w in points.windows(2) {
        let (a, b) = ((f64::from(w[0].0), f64::from(w[0].1)), (f64::from(w[1].0), f64::from(w[1].1)));
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let mut t = 0.0;
        if drawing && current.is_empty() {
            current.push(w[0]);
        }
        while len - t > left {
            t += left;
            let p = ((a.0 + (b.0 - a.0) * t / len).round() as i32, (a.1 + (b.1 - a.1) * t / len).round() as i32);
            if drawing {
                current.push(p);
                out.push(std::mem::take(&mut current));
            } else {
                current = vec![p];
            }
            drawing = !drawing;
            left = f64::from(if drawing { on } else { off });
        }
        left -= len - t;
        if drawing {
            current.push(w[1]);
        }
    }
    if current.len() > 1 {
        out.push(current);
    }
    out
}

fn draw_path<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, pixels: &[(i32, i32)], style: ShapeStyle, dash: Dash) -> Result<(), String> {
    match dash_pattern(dash) {
        None => area.draw(&PathElement::new(pixels.to_vec(), style)).map_err(|e| e.to_string()),
        Some((on, off)) => {
            for seg in dashed_segments(pixels, on, off) {
                area.draw(&PathElement::new(seg, style)).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// A linear axis with given ticks. plotters' own `with_key_points` wrapper loses the label
/// formatter hook of f64 axes, so this is the same few lines with the hook kept.
struct Ticked {
    inner: RangedCoordf64,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ticked {
    fn new(range: std::ops::Range<f64>, bold: Vec<f64>, light: Vec<f64>) -> Ticked {
        Ticked { inner: range.into(), bold, light }
    }
}

impl Ranged for Ticked {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Opacity of lines and markers: where curves coincide, the one beneath still shows.
const LINE_ALPHA: f64 = 0.85;

/// The order series are drawn in: solid lines first and wide before narrow, so a dashed or
/// narrower curve on top of an equal one leaves the one beneath visible in its gaps and at
/// its edges. The legend keeps the chart's order.
fn draw_order(series: &[Series]) -> Vec<&Series> {
    let mut order: Vec<&Series> = series.iter().collect();
    let rank = |d: Dash| match d {
        Dash::Solid => 0,
        Dash::Dashed => 1,
        Dash::Dotted => 2,
    };
    order.sort_by_key(|s| (!s.line, rank(s.dash), std::cmp::Reverse(s.width)));
    order
}

fn draw_marker<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, at: (i32, i32), marker: Marker, color: RGBColor) -> Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let (x, y) = at;
    let fill = color.mix(LINE_ALPHA).filled();
    let stroke = color.mix(LINE_ALPHA).stroke_width(2);
    match marker {
        Marker::None => Ok(()),
        Marker::Circle => area.draw(&Circle::new(at, 5, fill)).map_err(err),
        Marker::Square => area.draw(&Rectangle::new([(x - 6, y - 6), (x + 6, y + 6)], stroke)).map_err(err),
        Marker::Triangle => area.draw(&Polygon::new(vec![(x, y - 7), (x + 6, y + 4), (x - 6, y + 4)], fill)).map_err(err),
        Marker::Diamond => area.draw(&PathElement::new(vec![(x, y - 8), (x + 8, y), (x, y + 8), (x - 8, y), (x, y - 8)], stroke)).map_err(err),
    }
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(&c.title, (FAMILY, 22).into_font().color(&BLACK)).map_err(err)?;
    let (plot_area, legend_area) = body.split_horizontally(WIDTH - LEGEND_WIDTH);
    let (x0, x1) = x_range(c);
    let (y0, y1) = y_range(c);
    // Ticks are chosen here rather than by plotters, whose fixed-format labels repeat ("0.0,
    // 0.0") or read "-0.0" on narrow ranges: the labels below are made from these values.
    let x_ticks: Vec<f64> = match &c.x_ticks {
        Some(t) => t.iter().copied().filter(|t| *t >= x0 && *t <= x1).collect(),
        None => integer_ticks(x0, x1, 20),
    };
    let x_labels = tick_labels(&x_ticks);
    let (y_ticks, y_labels, y_light) = if c.log10_y {
        let t = multiples(y0, y1, 1.0);
        let l = decade_labels(&t);
        (t, l, Vec::new())
    } else {
        let t = nice_ticks(y0, y1, 10);
        let light = t.windows(2).map(|w| (w[0] + w[1]) / 2.0).collect();
        let l = tick_labels(&t);
        (t, l, light)
    };
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(Ticked::new(x0..x1, x_ticks.clone(), Vec::new()), Ticked::new(y0..y1, y_ticks.clone(), y_light))
        .map_err(err)?;
    let x_fmt = |x: &f64| label_of(&x_ticks, &x_labels, *x);
    let y_fmt = |y: &f64| label_of(&y_ticks, &y_labels, *y);
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(RGBColor(240, 240, 240))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(err)?;

    // Everything below is drawn in pixels on the root (whose origin is the image's), so
    // bands and dashes are under our control rather than plotters' series types.
    let to_px = |x: f64, y: f64| chart.backend_coord(&(x, y));
    let area = root;
    if c.zero_line {
        area.draw(&PathElement::new(vec![to_px(x0, 0.0), to_px(x1, 0.0)], BLACK.stroke_width(1))).map_err(err)?;
    }
    for h in &c.hlines {
        if let Some((lo, hi)) = h.band.filter(|(a, b)| a.is_finite() && b.is_finite()) {
            area.draw(&Polygon::new(vec![to_px(x0, lo), to_px(x1, lo), to_px(x1, hi), to_px(x0, hi)], h.color.mix(0.12).filled())).map_err(err)?;
        }
        if h.y.is_finite() {
            draw_path(area, &[to_px(x0, h.y), to_px(x1, h.y)], h.color.stroke_width(2), h.dash)?;
        }
    }
    let order = draw_order(&c.series);
    let finite_points = |s: &Series| s.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).cloned().collect::<Vec<Point>>();
    // Bands first, all of them, so no band covers another series' line.
    for s in &order {
        let with_ci: Vec<Point> = finite_points(s).into_iter().filter(|p| p.lo.is_finite() && p.hi.is_finite()).collect();
        if s.band && with_ci.len() > 1 {
            let mut poly: Vec<(i32, i32)> = with_ci.iter().map(|p| to_px(p.x, p.hi)).collect();
            poly.extend(with_ci.iter().rev().map(|p| to_px(p.x, p.lo)));
            area.draw(&Polygon::new(poly, s.color.mix(0.18).filled())).map_err(err)?;
        }
    }
    for s in &order {
        let px: Vec<(i32, i32)> = finite_points(s).iter().map(|p| to_px(p.x, p.y)).collect();
        if s.line && px.len() > 1 {
            draw_path(area, &px, s.color.mix(LINE_ALPHA).stroke_width(s.width), s.dash)?;
        }
    }
    // Markers and whiskers last, so no line hides them.
    for s in &order {
        let pts = finite_points(s);
        let stroke = s.color.mix(LINE_ALPHA).stroke_width(2);
        for p in &pts {
            if s.error_bars && p.lo.is_finite() && p.hi.is_finite() {
                let (top, bottom) = (to_px(p.x, p.hi), to_px(p.x, p.lo));
                area.draw(&PathElement::new(vec![top, bottom], stroke)).map_err(err)?;
                area.draw(&PathElement::new(vec![(top.0 - 5, top.1), (top.0 + 5, top.1)], stroke)).map_err(err)?;
                area.draw(&PathElement::new(vec![(bottom.0 - 5, bottom.1), (bottom.0 + 5, bottom.1)], stroke)).map_err(err)?;
            }
            // A lone point of a curve has no line to show it: give it a marker.
            let marker = if s.marker == Marker::None && (pts.len() == 1 || !s.line) { Marker::Circle } else { s.marker };
            draw_marker(area, to_px(p.x, p.y), marker, s.color)?;
        }
    }
    draw_legend(&legend_area, c)?;
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let text = TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 40;
    struct Entry<'a> {
        label: &'a str,
        color: RGBColor,
        dash: Dash,
        band: bool,
        line: bool,
        width: u32,
        marker: Marker,
        error_bars: bool,
    }
    let entries = c
        .series
        .iter()
        .map(|s| Entry {
            label: &s.label,
            color: s.color,
            dash: s.dash,
            band: s.band,
            line: s.line,
            width: s.width,
            marker: s.marker,
            error_bars: s.error_bars,
        })
        .chain(c.hlines.iter().map(|h| Entry {
            label: &h.label,
            color: h.color,
            dash: h.dash,
            band: h.band.is_some(),
            line: true,
            width: 2,
            marker: Marker::None,
            error_bars: false,
        }));
    for e in entries {
        if e.band {
            area.draw(&Rectangle::new([(10, y - 8), (56, y + 8)], e.color.mix(0.18).filled())).map_err(err)?;
        }
        if e.line {
            draw_path(area, &[(10, y), (56, y)], e.color.stroke_width(e.width), e.dash)?;
        }
        if e.error_bars {
            let stroke = e.color.stroke_width(2);
            area.draw(&PathElement::new(vec![(33, y - 9), (33, y + 9)], stroke)).map_err(err)?;
            for yy in [y - 9, y + 9] {
                area.draw(&PathElement::new(vec![(28, yy), (38, yy)], stroke)).map_err(err)?;
            }
        }
        let marker = if e.marker == Marker::None && !e.line { Marker::Circle } else { e.marker };
        draw_marker(area, (33, y), marker, e.color)?;
        // Long labels wrap onto a second line rather than run off the image.
        let lines = wrap(e.label, 30);
        for (i, line) in lines.iter().enumerate() {
            area.draw(&Text::new(line.clone(), (66, y + 18 * i as i32), text.clone())).map_err(err)?;
        }
        y += 18 * lines.len() as i32 + 14;
    }
    if !c.note.is_empty() {
        y += 10;
        let note = TextStyle::from((FAMILY, 13).into_font()).color(&GREY).pos(Pos::new(HPos::Left, VPos::Center));
        for line in wrap(&c.note, 38) {
            area.draw(&Text::new(line, (10, y), note.clone())).map_err(err)?;
            y += 17;
        }
    }
    Ok(())
}

fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in s.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashes_cover_a_line_in_pieces() {
        let segs = dashed_segments(&[(0, 0), (100, 0)], 10, 5);
        assert_eq!(segs.len(), 7);
        assert_eq!(segs[0], vec![(0, 0), (10, 0)]);
        assert_eq!(segs[1], vec![(15, 0), (25, 0)]);
        // Patterns continue across vertices.
        let segs = dashed_segments(&[(0, 0), (6, 0), (12, 0), (30, 0)], 10, 5);
        assert_eq!(segs[0], vec![(0, 0), (6, 0), (10, 0)]);
        assert_eq!(segs[1], vec![(15, 0), (25, 0)]);
    }

    fn distinct(labels: &[String]) -> bool {
        labels.iter().collect::<std::collections::BTreeSet<_>>().len() == labels.len()
    }

    #[test]
    fn tick_labels_are_distinct_and_never_negative_zero() {
        // A narrow range around 0, where one-decimal labels read "0.0, 0.0, -0.0".
        let t = nice_ticks(-0.06, 0.06, 10);
        assert_eq!(tick_labels(&t), ["-0.06", "-0.04", "-0.02", "0.00", "0.02", "0.04", "0.06"]);
        let t = nice_ticks(-0.052, 0.11, 10);
        let l = tick_labels(&t);
        assert!(distinct(&l) && l.len() >= 5, "{l:?}");
        assert!(l.iter().all(|l| !l.starts_with("-0") || l.trim_start_matches(['-', '0', '.']).chars().any(|c| c != '0')), "{l:?}");
        assert_eq!(tick_labels(&[-0.0, 1.0]), ["0", "1"]);
        assert_eq!(tick_labels(&[-0.0, 0.25, 0.5]), ["0.00", "0.25", "0.50"]);
        assert_eq!(tick_labels(&nice_ticks(-86.3, 12.1, 10)), ["-80", "-70", "-60", "-50", "-40", "-30", "-20", "-10", "0", "10"]);
        // No float noise: 0.1 + 0.2 is written 0.3.
        assert_eq!(tick_labels(&nice_ticks(0.0, 0.35, 4)), ["0.0", "0.1", "0.2", "0.3"]);
        for (lo, hi) in [(-1e-3, 2e-3), (0.0, 1.0), (-0.5, 0.5), (3.0, 3.7), (-1234.0, 98765.0), (1e-7, 9e-7)] {
            let t = nice_ticks(lo, hi, 10);
            let l = tick_labels(&t);
            assert!(t.len() >= 2 && distinct(&l), "{lo}..{hi}: {l:?}");
            assert!(t.iter().all(|v| *v >= lo && *v <= hi), "{lo}..{hi}: {t:?}");
            assert!(l.iter().all(|s| s.parse::<f64>().unwrap() != 0.0 || !s.starts_with('-')), "{l:?}");
        }
        assert_eq!(decade_labels(&[0.0, 1.0, 2.0, 5.0]), ["1", "10", "100", "100000"]);
        assert_eq!(integer_ticks(-0.5, 18.5, 20), (0..=18).map(f64::from).collect::<Vec<_>>());
        assert_eq!(integer_ticks(-0.5, 48.5, 20).iter().take(3).copied().collect::<Vec<_>>(), [0.0, 5.0, 10.0]);
    }

    fn chart(ys: &[f64]) -> Chart {
        let points = ys.iter().enumerate().map(|(i, y)| Point { x: i as f64 + 1.0, y: *y, lo: *y, hi: *y }).collect();
        Chart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series::curve("s", BLUE, Dash::Solid, points, true)],
            hlines: vec![],
            log10_y: false,
            zero_line: false,
            note: String::new(),
            x_ticks: None,
        }
    }

    #[test]
    fn a_flat_curve_gets_a_one_unit_range() {
        let (lo, hi) = y_range(&chart(&[0.0; 12]));
        assert!(lo < 0.0 && lo > -0.1 && hi > 1.0 && hi < 1.1, "{lo}..{hi}");
        let (lo, hi) = y_range(&chart(&[-3.0; 12]));
        assert!((hi - lo - 1.12).abs() < 1e-9 && lo < -3.0 && hi > -3.0, "{lo}..{hi}");
        // Not flat: the data's own range.
        let (lo, hi) = y_range(&chart(&[0.0, 40.0]));
        assert!((lo + 2.4).abs() < 1e-9 && (hi - 42.4).abs() < 1e-9, "{lo}..{hi}");
    }

    /// The texts of an SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants().filter(|n| n.has_tag_name("text")).map(|n| n.text().unwrap_or_default().trim().to_string()).collect()
    }

    #[test]
    fn rendered_axes_of_flat_and_narrow_curves_have_sane_labels() {
        for ys in [vec![0.0; 12], vec![0.0, 0.02, 0.1, 0.0, 0.04], vec![-0.01, 0.0, 0.01]] {
            let labels: Vec<String> = texts(&render_svg(&chart(&ys)).unwrap()).into_iter().filter(|t| t.parse::<f64>().is_ok()).collect();
            assert!(!labels.iter().any(|l| l.starts_with("-0") && l.parse::<f64>().unwrap() == 0.0), "{ys:?}: {labels:?}");
            let y_labels: Vec<&String> = labels.iter().filter(|l| l.contains('.') || l.starts_with('-')).collect();
            let set: std::collections::BTreeSet<_> = y_labels.iter().collect();
            assert_eq!(set.len(), y_labels.len(), "{ys:?}: repeated y labels {labels:?}");
            assert!(y_labels.len() >= 4, "{ys:?}: {labels:?}");
        }
    }

    #[test]
    fn wrapping_keeps_words() {
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 6), vec![""]);
    }
}
