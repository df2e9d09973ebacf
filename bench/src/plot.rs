//! PNG line plots of the soak (a series over the cycle count), drawn by plotters' bitmap
//! backend. Text needs a TrueType font read at run time (DejaVu Sans, Debian's
//! `fonts-dejavu-core`); without one the plots are drawn without captions or labels.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Where Debian keeps the font the captions are written in.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Whether a font was registered for text.
fn has_font() -> bool {
    static FONT_OK: OnceLock<bool> = OnceLock::new();
    *FONT_OK.get_or_init(|| {
        let Ok(bytes) = std::fs::read(FONT) else {
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// A series to draw: its name and (cycle, value) points.
pub(crate) struct Series<'a> {
    pub(crate) name: &'a str,
    pub(crate) points: Vec<(f64, f64)>,
}

/// Draws `series` (one colour each) into a PNG at `path`, y from 0 to above the highest
/// point, so that a flat line looks flat.
pub(crate) fn lines(path: &Path, caption: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow!("plotting {}: {e}", path.display());
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.2
        + f64::EPSILON;
    let root = BitMapBackend::new(path, (800, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let text = has_font();
    let mut builder = ChartBuilder::on(&root);
    builder.margin(12);
    if text {
        builder
            .caption(caption, ("sans-serif", 20))
            .x_label_area_size(36)
            .y_label_area_size(60);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(&e))?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("cycle").y_desc(y_label);
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| err(&e))?;
    let colours = [RED, BLUE, GREEN, MAGENTA];
    for (s, colour) in series.iter().zip(colours.into_iter().cycle()) {
        let drawn = chart
            .draw_series(LineSeries::new(s.points.iter().copied(), colour))
            .map_err(|e| err(&e))?;
        if text {
            drawn
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    if text && series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        let path = std::env::temp_dir().join(format!("hutch-plot-{}.png", std::process::id()));
        let points = (0..50).map(|i| (i as f64, 20.0 + (i % 3) as f64)).collect();
        lines(
            &path,
            "test",
            "MiB",
            &[Series {
                name: "rss",
                points,
            }],
        )
        .unwrap();
        let png = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(&png[1..4], b"PNG");
    }
}
