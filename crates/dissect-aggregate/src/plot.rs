//! A small line-chart description and its rendering with plotters to SVG and PNG. Text is
//! drawn with DejaVu Sans, embedded in the binary, so the PNGs look the same on every
//! machine and no system font or fontconfig is needed.

use std::sync::OnceLock;

use ab_glyph::FontRef;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::glyph_text::GlyphText;

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core); licence in `assets/DejaVuSans-LICENSE`.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

pub const WIDTH: u32 = 1200;
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
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dashes.
    Dotted,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// The 95% interval, drawn as a band (or error bar with markers); NaN for none.
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub dash: Dash,
    pub points: Vec<Point>,
    pub band: bool,
    pub markers: bool,
}

/// A horizontal reference line (a baseline), optionally with its interval as a band.
#[derive(Debug, Clone, PartialEq)]
pub struct HLine {
    pub label: String,
    pub color: RGBColor,
    pub dash: Dash,
    pub y: f64,
    pub band: Option<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub hlines: Vec<HLine>,
    /// Values are log10 of the quantity; tick labels show 10^v.
    pub log10_y: bool,
    /// Draw y = 0.
    pub zero_line: bool,
    /// A note under the legend (e.g. what the bands are).
    pub note: String,
}

/// Okabe–Ito colours: distinguishable with the common colour-vision deficiencies.
pub const BLUE: RGBColor = RGBColor(0, 114, 178);
pub const ORANGE: RGBColor = RGBColor(230, 159, 0);
pub const GREEN: RGBColor = RGBColor(0, 158, 115);
pub const VERMILION: RGBColor = RGBColor(213, 94, 0);
pub const PURPLE: RGBColor = RGBColor(204, 121, 167);
pub const SKY: RGBColor = RGBColor(86, 180, 233);
pub const GREY: RGBColor = RGBColor(90, 90, 90);
pub const PALETTE: [RGBColor; 6] = [BLUE, VERMILION, GREEN, ORANGE, PURPLE, SKY];

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

/// The y range over everything drawn, padded by 6%; never empty.
fn y_range(c: &Chart) -> (f64, f64) {
    let mut ys: Vec<f64> = Vec::new();
    for s in &c.series {
        for p in &s.points {
            ys.extend([p.y].into_iter().filter_map(finite));
            if s.band || s.markers {
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
    let span = if hi - lo < 1e-9 { 1.0 } else { hi - lo };
    (lo - 0.06 * span, hi + 0.06 * span)
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

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(&c.title, (FAMILY, 22).into_font().color(&BLACK)).map_err(err)?;
    let (plot_area, legend_area) = body.split_horizontally(WIDTH - LEGEND_WIDTH);
    let (x0, x1) = x_range(c);
    let (y0, y1) = y_range(c);
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    // Layers are integers: label only integer ticks, so a narrow axis never shows "2.5".
    let x_fmt = |x: &f64| if (x - x.round()).abs() < 1e-9 { format!("{}", x.round()) } else { String::new() };
    let log = c.log10_y;
    let y_fmt = move |y: &f64| {
        if !log {
            let a = y.abs();
            if a >= 100.0 || (a - a.round()).abs() < 1e-9 {
                format!("{y:.0}")
            } else {
                format!("{y:.1}")
            }
        } else if (y - y.round()).abs() < 1e-9 {
            format!("{}", 10f64.powi(y.round() as i32))
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .x_labels(20)
        // On a log axis, ask for about one tick per decade so they land on powers of ten
        // (evenly spaced lines between decades would read as a linear minor grid).
        .y_labels(if log { ((y1 - y0).ceil() as usize + 1).max(2) } else { 10 })
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        // One light line between labelled ticks; plotters' default (ten) greys the plot.
        .max_light_lines(if log { 0 } else { 1 })
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
    for s in &c.series {
        let pts: Vec<&Point> = s.points.iter().filter(|p| p.x.is_finite() && p.y.is_finite()).collect();
        let with_ci: Vec<&&Point> = pts.iter().filter(|p| p.lo.is_finite() && p.hi.is_finite()).collect();
        if s.band && with_ci.len() > 1 {
            let mut poly: Vec<(i32, i32)> = with_ci.iter().map(|p| to_px(p.x, p.hi)).collect();
            poly.extend(with_ci.iter().rev().map(|p| to_px(p.x, p.lo)));
            area.draw(&Polygon::new(poly, s.color.mix(0.18).filled())).map_err(err)?;
        }
        let px: Vec<(i32, i32)> = pts.iter().map(|p| to_px(p.x, p.y)).collect();
        if px.len() > 1 {
            draw_path(area, &px, s.color.stroke_width(if s.dash == Dash::Solid { 3 } else { 2 }), s.dash)?;
        }
        if s.markers || px.len() == 1 {
            for p in &pts {
                if s.markers && p.lo.is_finite() && p.hi.is_finite() {
                    let (top, bottom) = (to_px(p.x, p.hi), to_px(p.x, p.lo));
                    area.draw(&PathElement::new(vec![top, bottom], s.color.stroke_width(2))).map_err(err)?;
                    area.draw(&PathElement::new(vec![(top.0 - 5, top.1), (top.0 + 5, top.1)], s.color.stroke_width(2))).map_err(err)?;
                    area.draw(&PathElement::new(vec![(bottom.0 - 5, bottom.1), (bottom.0 + 5, bottom.1)], s.color.stroke_width(2))).map_err(err)?;
                }
                area.draw(&Circle::new(to_px(p.x, p.y), 5, s.color.filled())).map_err(err)?;
            }
        }
    }
    draw_legend(&legend_area, c)?;
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let err = |e: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let text = TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = 40;
    let entries = c.series.iter().map(|s| (&s.label, s.color, s.dash, s.band, s.markers)).chain(c.hlines.iter().map(|h| (&h.label, h.color, h.dash, h.band.is_some(), false)));
    for (label, color, dash, band, markers) in entries {
        if band {
            area.draw(&Rectangle::new([(10, y - 8), (56, y + 8)], color.mix(0.18).filled())).map_err(err)?;
        }
        draw_path(area, &[(10, y), (56, y)], color.stroke_width(if dash == Dash::Solid { 3 } else { 2 }), dash)?;
        if markers {
            area.draw(&Circle::new((33, y), 5, color.filled())).map_err(err)?;
        }
        // Long labels wrap onto a second line rather than run off the image.
        let lines = wrap(label, 30);
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

    #[test]
    fn wrapping_keeps_words() {
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("", 6), vec![""]);
    }
}
