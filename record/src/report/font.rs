//! The figures' font. plotters (feature `ab_glyph`) knows no fonts of its own: both backends
//! measure text with a font registered under the family name, and the PNG backend draws its
//! glyphs, so one is read from disk once per process rather than linking fontconfig.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use plotters::style::{FontStyle, register_font};

use super::ReportError;

/// A .ttf to use instead of the system fonts below.
pub const FONT_ENV: &str = "DORMOUSE_FONT";

/// Looked for in this order when `DORMOUSE_FONT` is unset (Debian: fonts-dejavu-core,
/// fonts-liberation, fonts-noto-core).
pub const DEFAULT_FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
];

/// The family every text style of the figures names (also plotters' default for axis labels).
pub(super) const FAMILY: &str = "sans-serif";

/// Whether `FAMILY` is registered; a failed attempt is retried on the next call, so a font
/// installed meanwhile is found.
static REGISTERED: Mutex<bool> = Mutex::new(false);

pub(super) fn ensure_registered() -> Result<(), ReportError> {
    let mut registered = REGISTERED.lock().unwrap_or_else(PoisonError::into_inner);
    if *registered {
        return Ok(());
    }
    let path = find(std::env::var_os(FONT_ENV).map(PathBuf::from), &DEFAULT_FONTS)?;
    let bytes = std::fs::read(&path).map_err(|source| ReportError::FontRead {
        path: path.clone(),
        source,
    })?;
    // plotters keeps the font for the rest of the process and wants it 'static.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes).map_err(|_| ReportError::FontInvalid { path })?;
    *registered = true;
    Ok(())
}

/// The font to read: the one asked for (whose absence is an error, not a reason to fall back
/// silently), else the first of `defaults` that exists.
fn find(asked: Option<PathBuf>, defaults: &[&str]) -> Result<PathBuf, ReportError> {
    if let Some(path) = asked.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(path);
    }
    defaults
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_owned)
        .ok_or_else(|| ReportError::NoFont {
            tried: defaults.iter().map(PathBuf::from).collect(),
        })
}

#[cfg(test)]
mod tests {
    use plotters::prelude::*;

    use super::*;

    #[test]
    fn missing_fonts_name_the_paths_and_the_package() {
        let tried = ["/nonexistent/a.ttf", "/nonexistent/b.ttf"];
        let err = find(None, &tried).expect_err("no font exists");
        let message = err.to_string();
        assert!(message.contains("/nonexistent/a.ttf, /nonexistent/b.ttf"), "{message}");
        assert!(
            message.contains("install fonts-dejavu-core or set DORMOUSE_FONT"),
            "{message}"
        );
    }

    #[test]
    fn an_asked_for_font_wins_and_an_empty_one_is_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let present = dir.path().join("present.ttf");
        std::fs::write(&present, b"x").expect("write");
        let defaults = [present.to_str().expect("utf-8")];
        let asked = PathBuf::from("/elsewhere/font.ttf");
        assert_eq!(find(Some(asked.clone()), &defaults).expect("asked"), asked);
        assert_eq!(find(Some(PathBuf::new()), &defaults).expect("default"), present);
    }

    /// Text reaches the PNG's pixels (not only the SVG's `<text>` elements).
    #[test]
    fn registered_font_draws_glyphs_in_bitmaps() {
        ensure_registered().expect("a font (fonts-dejavu-core) is installed");
        let (w, h) = (200u32, 40u32);
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        {
            let area = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            area.fill(&WHITE).expect("fill");
            area.draw(&Text::new("Dormouse", (5, 5), (FAMILY, 24).into_font()))
                .expect("text");
            area.present().expect("present");
        }
        let inked = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(inked > 100, "only {inked} pixels changed by the text");
    }
}
