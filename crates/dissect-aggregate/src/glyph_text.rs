//! The PNG backend's text path. In its own module because `plotters_backend::BackendStyle`
//! in scope makes `Color::stroke_width` ambiguous for the chart code.

use ab_glyph::{Font, FontRef, ScaleFont};
use plotters::prelude::DrawingBackend;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};

/// A bitmap backend whose text is laid out with each glyph's bearings and kerning. plotters'
/// ab_glyph path draws every glyph from the caret, ignoring its left bearing, so letters
/// with a negative bearing ("j") float right and leave a gap ("sub ject"). Everything but
/// text is the inner backend's; text *sizes* stay plotters' estimates, so the layout is the
/// same as the SVG's.
pub(crate) struct GlyphText<B> {
    pub(crate) inner: B,
    pub(crate) font: FontRef<'static>,
}

impl<B: DrawingBackend> DrawingBackend for GlyphText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(&mut self, from: BackendCoord, to: BackendCoord, style: &S) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(&mut self, ul: BackendCoord, br: BackendCoord, style: &S, fill: bool) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(ul, br, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, path: I, style: &S) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(&mut self, c: BackendCoord, r: u32, style: &S, fill: bool) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(c, r, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(&mut self, vert: I, style: &S) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    fn draw_text<T: BackendTextStyle>(&mut self, text: &str, style: &T, pos: BackendCoord) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        // The same scale plotters' ab_glyph font uses, so sizes match the SVG.
        let font = self.font.as_scaled(style.size() as f32);
        let (mut caret, mut prev) = (0.0f32, None);
        let mut glyphs = Vec::new();
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                caret += font.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(font.scale(), ab_glyph::point(caret, font.ascent())));
            caret += font.h_advance(id);
            prev = Some(id);
        }
        let (width, height) = (caret.round() as i32, (font.ascent() - font.descent()).round() as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let trans = style.transform();
        for g in glyphs {
            let Some(outline) = self.font.outline_glyph(g) else { continue };
            let b = outline.px_bounds();
            let mut coverage = Vec::new();
            outline.draw(|x, y, c| coverage.push((x as i32 + b.min.x as i32, y as i32 + b.min.y as i32, c)));
            for (x, y, c) in coverage.into_iter().filter(|p| p.2 > 0.0) {
                let (x, y) = trans.transform(x + dx, y + dy);
                self.inner.draw_pixel((pos.0 + x, pos.1 + y), BackendColor { alpha: color.alpha * f64::from(c.min(1.0)), rgb: color.rgb })?;
            }
        }
        Ok(())
    }
}
