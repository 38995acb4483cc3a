//! Drawing with plotters: the same code draws the SVG and the PNG of a figure.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::ReportError;
use super::font::{self, FAMILY};

/// What one figure shows, ready to draw.
pub(super) enum Drawing {
    Stacked(Stacked),
    Online(Online),
}

/// Horizontal stacked bars in one or more panels sharing the x scale and the legend.
pub(super) struct Stacked {
    pub title: String,
    pub unit: Unit,
    /// The stacked series with their colours, in stacking and legend order.
    pub series: Vec<(String, RGBColor)>,
    pub panels: Vec<Panel>,
}

pub(super) struct Panel {
    pub caption: Option<String>,
    /// Top to bottom.
    pub rows: Vec<Row>,
}

pub(super) struct Row {
    pub label: String,
    /// One per series.
    pub values: Vec<f64>,
}

#[derive(Clone, Copy)]
pub(super) enum Unit {
    Seconds,
    Bytes,
    Count,
}

/// Online step against online update, one point per record.
pub(super) struct Online {
    pub title: String,
    pub points: Vec<OnlinePoint>,
}

pub(super) struct OnlinePoint {
    pub label: String,
    pub update_seconds: f64,
    pub step_seconds: f64,
    pub ratio: Option<f64>,
}

/// Tableau's 20 colours: the 10 strong ones first, then their light variants.
pub(super) const PALETTE: [RGBColor; 20] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0xae, 0xc7, 0xe8),
    RGBColor(0xff, 0xbb, 0x78),
    RGBColor(0x98, 0xdf, 0x8a),
    RGBColor(0xff, 0x98, 0x96),
    RGBColor(0xc5, 0xb0, 0xd5),
    RGBColor(0xc4, 0x9c, 0x94),
    RGBColor(0xf7, 0xb6, 0xd2),
    RGBColor(0xc7, 0xc7, 0xc7),
    RGBColor(0xdb, 0xdb, 0x8d),
    RGBColor(0x9e, 0xda, 0xe5),
];

pub(super) fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// `text` cut to `max` characters by an ellipsis in the middle, so labels keep inside the
/// figure and names that differ only at their end (versions, dates) stay apart.
pub(super) fn ellipsize(text: &str, max: usize) -> String {
    let chars = text.chars().count();
    if chars <= max {
        return text.to_owned();
    }
    let kept = max.saturating_sub(1);
    let tail = kept / 3;
    let head = kept - tail;
    let mut cut: String = text.chars().take(head).collect();
    cut.push('…');
    cut.extend(text.chars().skip(chars - tail));
    cut
}

const WIDTH: u32 = 1200;
const TITLE_PX: u32 = 48;
const ROW_PX: u32 = 26;
const CAPTION_PX: u32 = 30;
const X_AXIS_PX: u32 = 50;
const PANEL_MARGIN_PX: u32 = 12;
const LEGEND_WIDTH: u32 = 240;
const LEGEND_ROW_PX: u32 = 22;
const LEGEND_LABEL_CHARS: usize = 26;
const MIN_HEIGHT: u32 = 320;
/// Grid lines between two labelled ticks.
const LIGHT_LINES: usize = 1;
const ONLINE_SIZE: (u32, u32) = (1200, 620);
/// Points get their record's name written beside them up to this many.
const ONLINE_NAMED_POINTS: usize = 12;
const ONLINE_NAME_CHARS: usize = 24;

/// Draws `drawing` into `svg` and `png`.
pub(super) fn render(drawing: &Drawing, svg: &Path, png: &Path) -> Result<(), ReportError> {
    font::ensure_registered()?;
    let size = size(drawing);
    let plot_error = |path: &Path, message: String| ReportError::Plot {
        path: path.to_owned(),
        message,
    };

    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, size).into_drawing_area();
        draw(&root, drawing)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(svg, e.to_string()))?;
    }
    std::fs::write(svg, svg_text).map_err(|source| ReportError::Write {
        path: svg.to_owned(),
        source,
    })?;

    let root = BitMapBackend::new(png, size).into_drawing_area();
    draw(&root, drawing)
        .and_then(|()| root.present())
        .map_err(|e| plot_error(png, e.to_string()))
}

fn size(drawing: &Drawing) -> (u32, u32) {
    match drawing {
        Drawing::Stacked(stacked) => {
            let panels: u32 = stacked.panels.iter().map(panel_height).sum();
            let legend = LEGEND_ROW_PX * stacked.series.len() as u32 + 2 * PANEL_MARGIN_PX;
            (WIDTH, (TITLE_PX + panels.max(legend)).max(MIN_HEIGHT))
        }
        Drawing::Online(_) => ONLINE_SIZE,
    }
}

fn panel_height(panel: &Panel) -> u32 {
    let caption = if panel.caption.is_some() { CAPTION_PX } else { 0 };
    caption + ROW_PX * panel.rows.len() as u32 + X_AXIS_PX + 2 * PANEL_MARGIN_PX
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, drawing: &Drawing) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    match drawing {
        Drawing::Stacked(stacked) => draw_stacked(root, stacked),
        Drawing::Online(online) => draw_online(root, online),
    }
}

fn label_style() -> TextStyle<'static> {
    TextStyle::from((FAMILY, 14).into_font())
}

fn draw_stacked<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, stacked: &Stacked) -> DrawResult<DB> {
    let body = root.titled(&stacked.title, (FAMILY, 22))?;
    let (mut charts, legend) = body.split_horizontally(WIDTH - LEGEND_WIDTH);
    draw_legend(&legend, &stacked.series)?;
    let x_max = stacked
        .panels
        .iter()
        .flat_map(|p| &p.rows)
        .map(|row| row.values.iter().sum::<f64>())
        .fold(0.0, f64::max);
    // Room at the bar ends for the totals written there.
    let x_max = if x_max > 0.0 { x_max * 1.15 } else { 1.0 };
    let scale = Scale::for_unit(stacked.unit, x_max);
    let label_width = stacked
        .panels
        .iter()
        .flat_map(|p| &p.rows)
        .map(|row| root.estimate_text_size(&row.label, &label_style()).map(|(w, _)| w))
        .try_fold(0, |widest, width| width.map(|w| w.max(widest)))?;
    for panel in &stacked.panels {
        let (area, rest) = charts.split_vertically(panel_height(panel));
        draw_panel(&area, stacked, panel, x_max, &scale, label_width)?;
        charts = rest;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    stacked: &Stacked,
    panel: &Panel,
    x_max: f64,
    scale: &Scale,
    label_width: u32,
) -> DrawResult<DB> {
    let rows = panel.rows.len();
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(PANEL_MARGIN_PX)
        .margin_right(24)
        .x_label_area_size(X_AXIS_PX)
        .y_label_area_size(label_width + 14);
    if let Some(caption) = &panel.caption {
        builder.caption(caption, (FAMILY, 16));
    }
    // Plotted in the axis' unit (MiB, ...), so that plotters' round ticks are round there.
    let mut chart = builder.build_cartesian_2d(0.0..x_max / scale.divisor, 0.0..rows as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_labels(8)
        .max_light_lines(LIGHT_LINES)
        .x_label_formatter(&|x| scale.tick(*x))
        .x_desc(scale.axis_name.clone())
        .label_style(label_style())
        .axis_desc_style(label_style())
        .draw()?;

    let plot = chart.plotting_area();
    let left_label = label_style().pos(Pos::new(HPos::Right, VPos::Center));
    let right_label = label_style().pos(Pos::new(HPos::Left, VPos::Center));
    for (i, row) in panel.rows.iter().enumerate() {
        // Row 0 on top.
        let bottom = (rows - 1 - i) as f64;
        let middle = bottom + 0.5;
        plot.draw(&(EmptyElement::at((0.0, middle)) + Text::new(row.label.clone(), (-8, 0), left_label.clone())))?;
        let mut start = 0.0;
        for (value, (_, colour)) in row.values.iter().zip(&stacked.series) {
            if *value > 0.0 {
                let (left, right) = (start / scale.divisor, (start + value) / scale.divisor);
                let mut bar = Rectangle::new([(left, bottom), (right, bottom + 1.0)], colour.filled());
                bar.set_margin(4, 4, 0, 0);
                plot.draw(&bar)?;
                start += value;
            }
        }
        let end = EmptyElement::at((start / scale.divisor, middle));
        plot.draw(&(end + Text::new(scale.total(start), (6, 0), right_label.clone())))?;
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[(String, RGBColor)]) -> DrawResult<DB> {
    let style = label_style().pos(Pos::new(HPos::Left, VPos::Center));
    for (i, (name, colour)) in series.iter().enumerate() {
        let top = (PANEL_MARGIN_PX + LEGEND_ROW_PX * i as u32) as i32;
        area.draw(&Rectangle::new([(8, top + 3), (24, top + 19)], colour.filled()))?;
        let name = ellipsize(name, LEGEND_LABEL_CHARS);
        area.draw(&Text::new(name, (32, top + 11), style.clone()))?;
    }
    Ok(())
}

fn draw_online<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, online: &Online) -> DrawResult<DB> {
    let body = root.titled(&online.title, (FAMILY, 22))?;
    let (left, right) = body.split_horizontally(ONLINE_SIZE.0 / 2);
    let named = online.points.len() <= ONLINE_NAMED_POINTS;
    let limit_style = PALETTE[3].stroke_width(2);
    let tick = |value: &f64| trim_decimals(*value, 2);

    // Ratios as a strip: one dot per record, spread vertically so equal ratios stay visible.
    let percents: Vec<(&OnlinePoint, f64)> = online
        .points
        .iter()
        .filter_map(|p| p.ratio.map(|r| (p, r * 100.0)))
        .collect();
    let x_max = percents.iter().map(|(_, pct)| *pct).fold(0.0, f64::max).max(10.0) * 1.2;
    let mut strip = ChartBuilder::on(&left)
        .caption("online step as a share of the online update", (FAMILY, 16))
        .margin(PANEL_MARGIN_PX)
        .margin_right(24)
        .x_label_area_size(X_AXIS_PX)
        .build_cartesian_2d(0.0..x_max, 0.0..1.0)?;
    strip
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .max_light_lines(LIGHT_LINES)
        .x_label_formatter(&tick)
        .x_desc("step / update (%)")
        .label_style(label_style())
        .axis_desc_style(label_style())
        .draw()?;
    strip
        .draw_series(LineSeries::new([(10.0, 0.0), (10.0, 1.0)], limit_style))?
        .label("10 %")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], limit_style));
    for (i, (point, pct)) in percents.iter().enumerate() {
        let name = named.then_some(point.label.as_str());
        draw_point(strip.plotting_area(), (*pct, spread(i)), name, x_max)?;
    }
    draw_series_legend(&mut strip)?;

    let update_max = online.points.iter().map(|p| p.update_seconds).fold(0.0, f64::max);
    let step_max = online.points.iter().map(|p| p.step_seconds).fold(0.0, f64::max);
    let x_max = if update_max > 0.0 { update_max * 1.1 } else { 1.0 };
    let y_max = step_max.max(0.1 * x_max).max(0.01) * 1.15;
    let mut scatter = ChartBuilder::on(&right)
        .caption("online step against online update", (FAMILY, 16))
        .margin(PANEL_MARGIN_PX)
        .margin_right(24)
        .x_label_area_size(X_AXIS_PX)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    scatter
        .configure_mesh()
        .max_light_lines(LIGHT_LINES)
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .x_desc("online update (s)")
        .y_desc("online step (s)")
        .label_style(label_style())
        .axis_desc_style(label_style())
        .draw()?;
    scatter
        .draw_series(LineSeries::new([(0.0, 0.0), (x_max, 0.1 * x_max)], limit_style))?
        .label("step = 10 % of update")
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], limit_style));
    for point in &online.points {
        let name = named.then_some(point.label.as_str());
        draw_point(
            scatter.plotting_area(),
            (point.update_seconds, point.step_seconds),
            name,
            x_max,
        )?;
    }
    draw_series_legend(&mut scatter)
}

/// A record's dot, with its name on the side towards the middle so it stays in the figure.
fn draw_point<DB: DrawingBackend>(
    plot: &DrawingArea<DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    at: (f64, f64),
    name: Option<&str>,
    x_max: f64,
) -> DrawResult<DB> {
    plot.draw(&Circle::new(at, 6, PALETTE[0].mix(0.75).filled()))?;
    let Some(name) = name else { return Ok(()) };
    let (side, dx) = if at.0 > x_max / 2.0 {
        (HPos::Right, -6)
    } else {
        (HPos::Left, 6)
    };
    let style = TextStyle::from((FAMILY, 12).into_font()).pos(Pos::new(side, VPos::Bottom));
    plot.draw(&(EmptyElement::at(at) + Text::new(ellipsize(name, ONLINE_NAME_CHARS), (dx, -6), style)))
}

fn draw_series_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(label_style())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
}

/// Heights in (0.15, 0.85) that differ for neighbouring indices (golden-ratio steps), so the
/// same figure comes out every time.
fn spread(i: usize) -> f64 {
    0.15 + 0.7 * (i as f64 * 0.618_033_988_75).fract()
}

/// How an axis writes its values: bytes in the binary unit that suits the largest one.
struct Scale {
    unit: Unit,
    divisor: f64,
    axis_name: String,
}

impl Scale {
    fn for_unit(unit: Unit, max: f64) -> Scale {
        let (divisor, axis_name) = match unit {
            Unit::Seconds => (1.0, "seconds".to_owned()),
            Unit::Count => (1.0, "scripts".to_owned()),
            Unit::Bytes => {
                let (divisor, name) = binary_unit(max);
                (divisor, format!("bytes ({name})"))
            }
        };
        Scale {
            unit,
            divisor,
            axis_name,
        }
    }

    /// A tick's label, `value` already in the axis' unit.
    fn tick(&self, value: f64) -> String {
        match self.unit {
            // Counts are whole; plotters may put ticks between them.
            Unit::Count if value.fract() != 0.0 => String::new(),
            _ => trim_decimals(value, 2),
        }
    }

    /// A bar's total, written at its end.
    fn total(&self, value: f64) -> String {
        match self.unit {
            Unit::Seconds => format!("{} s", trim_decimals(value, 2)),
            Unit::Count => format!("{value:.0}"),
            Unit::Bytes => {
                let (divisor, name) = binary_unit(value);
                format!("{} {name}", trim_decimals(value / divisor, 1))
            }
        }
    }
}

fn binary_unit(bytes: f64) -> (f64, &'static str) {
    let (mut divisor, mut name) = (1.0, "B");
    for larger in ["KiB", "MiB", "GiB", "TiB"] {
        if bytes < divisor * 1024.0 {
            break;
        }
        divisor *= 1024.0;
        name = larger;
    }
    (divisor, name)
}

fn trim_decimals(value: f64, decimals: usize) -> String {
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsis_keeps_short_labels_and_cuts_long_ones() {
        assert_eq!(ellipsize("libc6", 8), "libc6");
        assert_eq!(ellipsize("linux-image-6.1.0-18-amd64", 8), "linux…64");
        assert_eq!(ellipsize("linux-image-6.1.0-18-amd64", 8).chars().count(), 8);
        assert_eq!(ellipsize("ääääääääää", 4).chars().count(), 4);
    }

    #[test]
    fn byte_units() {
        assert_eq!(binary_unit(1000.0), (1.0, "B"));
        assert_eq!(binary_unit(3.0 * 1024.0 * 1024.0), (1024.0 * 1024.0, "MiB"));
        let scale = Scale::for_unit(Unit::Bytes, 5.0 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(scale.axis_name, "bytes (GiB)");
        assert_eq!(scale.divisor, 1024.0 * 1024.0 * 1024.0);
        assert_eq!(scale.tick(1.50), "1.5");
        assert_eq!(scale.total(2048.0), "2 KiB");
        assert_eq!(Scale::for_unit(Unit::Count, 3.0).tick(0.5), "");
    }
}
