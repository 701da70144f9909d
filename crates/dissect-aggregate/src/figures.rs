//! One chart per figure of the paper, built from the summary tables. Block layers are drawn
//! 1-based like the paper's axes; hidden-state indices keep 0 = embeddings.

use plotters::style::RGBColor;

use crate::plot::{Chart, Dash, HLine, Marker, Point, Series, BLUE, GREEN, GREY, ORANGE, PURPLE, SKY, VERMILION};
use crate::summary::{Key, SummaryRow, SummaryTable};
use crate::tables::Tables;

/// A figure: its file stem, a caption for the report, and the chart.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem under `figures/` (`knockout`, `extraction`, …).
    pub name: &'static str,
    /// The report's caption: what is measured and, where there is one, the paper's figure it reproduces.
    pub caption: String,
    /// The chart, rendered to `.svg` and `.png`.
    pub chart: Chart,
}

/// What every title says besides the figure's subject.
pub struct Context<'a> {
    /// The model's short name (a path's file name) shown in every title.
    pub model: &'a str,
    /// Bootstrap resamples, stated in each note on the bands.
    pub resamples: usize,
    /// Bootstrap seed, stated in each note on the bands.
    pub seed: u64,
}

impl Context<'_> {
    fn title(&self, what: &str, n: Option<u64>) -> String {
        match n {
            Some(n) => format!("{what} — {} (n = {n})", self.model),
            None => format!("{what} — {}", self.model),
        }
    }

    /// What `drawn` (the bands, the bars) show.
    fn ci_note(&self, drawn: &str) -> String {
        format!("{drawn}: 95% percentile bootstrap CI over examples ({} resamples, seed {}).", self.resamples, self.seed)
    }

    fn band_note(&self) -> String {
        self.ci_note("Bands")
    }
}

fn point(x: f64, r: &SummaryRow) -> Point {
    Point { x, y: r.mean.value, lo: r.mean.ci_low, hi: r.mean.ci_high }
}

/// The curve of `filter`'s rows over the i32 key `by`, x = key + `shift`.
fn curve(t: &SummaryTable, filter: &[(&str, Key)], by: &str, shift: f64) -> Vec<Point> {
    t.series(filter, by).into_iter().filter_map(|(k, r)| Some(point(f64::from(k.as_i32()?) + shift, r))).collect()
}

fn series(label: &str, color: RGBColor, dash: Dash, points: Vec<Point>, band: bool) -> Series {
    Series::curve(label, color, dash, points, band)
}

/// One figure per summary table present: knockout, extraction, patching, enrichment, sublayer
/// knockout, ranks and parameters, in that order; absent experiments give no figure.
pub fn figures(t: &Tables, cx: &Context<'_>) -> Vec<Figure> {
    [knockout(t, cx), extraction(t, cx), patching(t, cx), enrichment(t, cx), sublayer(t, cx), ranks(t, cx), parameters(t, cx)].into_iter().flatten().collect()
}

fn knockout(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let k = t.knockout.as_ref()?;
    let sets = [
        ("subject", "subject", BLUE, Dash::Solid, Marker::Circle),
        ("non_subject", "non-subject (BOS incl.)", VERMILION, Dash::Solid, Marker::Square),
        ("last", "last", GREEN, Dash::Solid, Marker::Triangle),
        ("bos", "BOS only", PURPLE, Dash::Dashed, Marker::Diamond),
        ("non_subject_no_bos", "non-subject without BOS", ORANGE, Dash::Dashed, Marker::None),
    ];
    let mut s: Vec<Series> = sets
        .iter()
        .map(|&(b, label, color, dash, marker)| {
            series(&format!("last → {label}"), color, dash, curve(k, &[("positions", Key::s(b))], "layer", 1.0), true).with_marker(marker)
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    // Sets this code does not know still get drawn.
    for b in k.distinct("positions").iter().filter_map(Key::as_str).filter(|b| !sets.iter().any(|s| s.0 == *b)) {
        s.push(series(&format!("last → {b}"), GREY, Dash::Dotted, curve(k, &[("positions", Key::s(b))], "layer", 1.0), true));
    }
    let window = t.window.map(|w| format!("{w}-layer ")).unwrap_or_default();
    Some(Figure {
        name: "knockout",
        caption: format!(
            "Attention knockout (paper Fig. 2): mean % change of the probability of the predicted token when the last position's attention edges to a set of positions are blocked in a {window}window of layers centred at each layer."
        ),
        chart: Chart {
            title: cx.title("Attention knockout", t.count("examples:knockout")),
            x_label: format!("centre layer of the {window}knockout window (1-based)"),
            y_label: "mean % change in p(target)".into(),
            series: s,
            hlines: vec![],
            log10_y: false,
            zero_line: true,
            note: cx.band_note(),
            x_ticks: None,
        },
    })
}

fn extraction(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let x = t.extraction.as_ref()?;
    let mut s = Vec::new();
    // Clean first, then the blocked variants in the paper's order, then any others.
    let mut order: Vec<String> = ["none", "subject", "non_subject"].map(String::from).to_vec();
    order.retain(|b| x.distinct("positions").contains(&Key::s(b)));
    order.extend(x.distinct("positions").iter().filter_map(Key::as_str).filter(|b| !["none", "subject", "non_subject"].contains(b)).map(String::from));
    // The clean MHSA and MLP curves coincide wherever neither extracts (most early layers):
    // MLP's is wider and drawn beneath, and each has its own marker, so both stay visible.
    for (sub, name, color, clean_marker, clean_width) in [("attn", "MHSA", BLUE, Marker::Circle, 3), ("mlp", "MLP", VERMILION, Marker::Square, 5)] {
        let mut others = [Marker::Triangle, Marker::Diamond].into_iter();
        for blocked in order.iter().map(String::as_str) {
            let (label, dash, marker) = match blocked {
                "none" => (name.to_string(), Dash::Solid, clean_marker),
                "subject" => (format!("{name}, last → subject blocked"), Dash::Dashed, Marker::None),
                other => (format!("{name}, last → {} blocked", other.replace('_', "-")), Dash::Dotted, others.next().unwrap_or(Marker::None)),
            };
            let points = curve(x, &[("sublayer", Key::s(sub)), ("positions", Key::s(blocked))], "layer", 1.0);
            if !points.is_empty() {
                let sr = series(&label, color, dash, points, blocked == "none").with_marker(marker);
                s.push(if blocked == "none" { sr.with_width(clean_width) } else { sr });
            }
        }
    }
    Some(Figure {
        name: "extraction",
        caption: "Attribute extraction rate (paper Fig. 6/7): share of examples whose MHSA or MLP output at the last position, projected to the vocabulary, has the predicted token as top-1; clean runs solid, with the last position's edges to the subject (dashed) or non-subject positions (dotted) blocked in that layer.".into(),
        chart: Chart {
            title: cx.title("Attribute extraction rate by layer", t.count("examples:extraction")),
            x_label: "layer (1-based)".into(),
            y_label: "extraction rate (% of examples)".into(),
            series: s,
            hlines: vec![],
            log10_y: false,
            zero_line: false,
            note: format!("Bands on the clean runs only. {}", cx.band_note()),
            x_ticks: None,
        },
    })
}

fn patching(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let p = t.patching_any.as_ref()?;
    let colors = [("subject", BLUE, Marker::Circle), ("non_subject", VERMILION, Marker::Square), ("last", GREEN, Marker::Triangle)];
    let present = p.distinct("positions");
    let mut sets: Vec<&str> = colors.iter().map(|c| c.0).filter(|c| present.contains(&Key::s(c))).collect();
    sets.extend(present.iter().filter_map(Key::as_str).filter(|s| *s != "none" && !colors.iter().any(|c| c.0 == *s)));
    let mut s = Vec::new();
    let mut others = [PURPLE, ORANGE, SKY].into_iter();
    for (i, set) in sets.iter().enumerate() {
        let (color, marker) = colors.iter().find(|c| c.0 == *set).map(|c| (c.1, c.2)).unwrap_or_else(|| (others.next().unwrap_or(GREY), Marker::Diamond));
        // Sets share their x values: dodge them apart so the error bars do not overlap.
        let dodge = (i as f64 - (sets.len() as f64 - 1.0) / 2.0) * 0.12;
        // Source layers are a few discrete hidden states (0, 1, 5, 10): points with whiskers,
        // since a line between them would suggest values at layers never patched.
        s.push(Series::points(
            &format!("{} positions patched", set.replace('_', "-")),
            color,
            marker,
            curve(p, &[("positions", Key::s(set))], "source_hidden_state", dodge),
        ));
    }
    let sources: Vec<f64> = p.distinct("source_hidden_state").iter().filter_map(Key::as_i32).map(f64::from).collect();
    let hlines = p
        .select(&[("positions", Key::s("none"))])
        .first()
        .map(|r| HLine {
            label: "unpatched (clean MHSA)".into(),
            color: GREY,
            dash: Dash::Dashed,
            y: r.mean.value,
            band: Some((r.mean.ci_low, r.mean.ci_high)),
        })
        .into_iter()
        .collect();
    Some(Figure {
        name: "patching",
        caption: "Extraction under patching of early representations (paper §5.2): share of examples where MHSA extracts the predicted token at some layer ℓ when block ℓ's input at a set of positions is replaced by the same prompt's hidden state ℓ' (one block at a time), against the unpatched rate.".into(),
        chart: Chart {
            title: cx.title("MHSA extraction with early representations patched in", t.count("examples:patching")),
            x_label: "source hidden state ℓ' patched in (0 = embeddings)".into(),
            y_label: "MHSA extracts at any layer (% of examples)".into(),
            series: s,
            hlines,
            log10_y: false,
            zero_line: false,
            note: cx.ci_note("Bars and the unpatched band"),
            x_ticks: Some(sources),
        },
    })
}

fn enrichment(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let e = t.enrichment.as_ref()?;
    let known = [
        ("first", "first token", GREY, Dash::Dotted, Marker::None),
        ("subject_first", "subject first", SKY, Dash::Dashed, Marker::Triangle),
        ("subject_last", "subject last", BLUE, Dash::Solid, Marker::Circle),
        ("after_subject", "after subject", GREEN, Dash::Dashed, Marker::Diamond),
        ("last", "last", VERMILION, Dash::Solid, Marker::Square),
    ];
    let s: Vec<Series> = known
        .iter()
        .map(|&(p, label, color, dash, marker)| series(label, color, dash, curve(e, &[("position", Key::s(p))], "hidden_state", 0.0), true).with_marker(marker))
        .filter(|s| !s.points.is_empty())
        .collect();
    let hlines = t
        .enrichment_baseline
        .as_ref()
        .and_then(|b| b.rows.first())
        .map(|r| HLine {
            label: "mean subject input embedding".into(),
            color: PURPLE,
            dash: Dash::Dashed,
            y: r.mean.value,
            band: Some((r.mean.ci_low, r.mean.ci_high)),
        })
        .into_iter()
        .collect();
    Some(Figure {
        name: "enrichment",
        caption: "Attributes rate (paper Fig. 4): share of the top tokens of a hidden state's projection that appear in the subject's paragraphs, per position and layer; the embedding baseline dashed.".into(),
        chart: Chart {
            title: cx.title("Attributes rate by position and layer", t.count("examples:enrichment")),
            x_label: "hidden state ℓ (0 = embeddings, ℓ = output of layer ℓ)".into(),
            y_label: "attributes rate (%)".into(),
            series: s,
            hlines,
            log10_y: false,
            zero_line: false,
            note: cx.band_note(),
            x_ticks: None,
        },
    })
}

fn sublayer(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let k = t.sublayer_knockout.as_ref()?;
    let mut s = Vec::new();
    // Each (sublayer, mode) has its own marker: on a model whose MLPs have no output bias the
    // notebook's MLP knockout (hidden activations 0) is zeroing, so the two MLP curves
    // coincide and only the markers tell them apart.
    for (sub, name, color, markers) in
        [("mlp", "MLP", VERMILION, [Marker::Square, Marker::Triangle]), ("attn", "MHSA", BLUE, [Marker::Circle, Marker::Diamond])]
    {
        for mode in k.distinct("mode").iter().filter_map(Key::as_str).filter(|m| *m != "none") {
            let dash = if mode == "notebook" { Dash::Solid } else { Dash::Dashed };
            let label = match mode {
                "notebook" => format!("{name} knocked out (notebook)"),
                "zero" => format!("{name} output zeroed"),
                other => format!("{name} knocked out ({other})"),
            };
            let points = curve(k, &[("sublayer", Key::s(sub)), ("mode", Key::s(mode))], "start_layer", 1.0);
            if !points.is_empty() {
                let marker = if mode == "notebook" { markers[0] } else { markers[1] };
                s.push(series(&label, color, dash, points, mode == "notebook").with_marker(marker));
            }
        }
    }
    let hlines = k
        .select(&[("sublayer", Key::s("none"))])
        .first()
        .map(|r| HLine { label: "no intervention".into(), color: GREY, dash: Dash::Solid, y: r.mean.value, band: Some((r.mean.ci_low, r.mean.ci_high)) })
        .into_iter()
        .collect();
    let read = t.read_hidden_state.map(|r| format!(", read at hidden state {r}")).unwrap_or_default();
    Some(Figure {
        name: "sublayer_knockout",
        caption: format!(
            "Sublayer knockout (paper Fig. 5): attributes rate at the last subject token{read} when the MLP or MHSA sublayers of a run of layers starting at each layer are knocked out (notebook mode solid, output zeroed dashed)."
        ),
        chart: Chart {
            title: cx.title(&format!("Attributes rate under sublayer knockout{read}"), t.count("examples:sublayer_knockout")),
            x_label: "first knocked-out layer (1-based)".into(),
            y_label: "attributes rate at subject-last (%)".into(),
            series: s,
            hlines,
            log10_y: false,
            zero_line: false,
            note: format!("Bands on notebook mode only. {}", cx.band_note()),
            x_ticks: None,
        },
    })
}

fn parameters(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let p = t.parameters.as_ref()?;
    let s: Vec<Series> = [
        ("head_ov", "some head's OV of the subject-last state", BLUE, Marker::Circle, 3),
        ("mlp_value", "some dominant MLP sub-update at subject-last", VERMILION, Marker::Square, 5),
    ]
    .into_iter()
    .map(|(view, label, color, marker, width)| {
        series(label, color, Dash::Solid, curve(p, &[("view", Key::s(view))], "layer", 1.0), true).with_marker(marker).with_width(width)
    })
    .filter(|s| !s.points.is_empty())
    .collect();
    Some(Figure {
        name: "parameters",
        caption: format!(
            "Parameters in vocabulary space (paper README: Dar et al. 2023, LM-Debugger): share of examples where, in a layer, some attention head's OV circuit applied to the subject-last representation, or one of the MLP's dominant sub-updates at subject-last, has the predicted token among its top {} tokens.",
            crate::tables::PARAMETERS_TOP
        ),
        chart: Chart {
            title: cx.title("Target among the top tokens of parameter projections", t.count("examples:parameters_heads")),
            x_label: "layer (1-based)".into(),
            y_label: format!("% of examples, target in top {}", crate::tables::PARAMETERS_TOP),
            series: s,
            hlines: vec![],
            log10_y: false,
            zero_line: false,
            note: cx.band_note(),
            x_ticks: None,
        },
    })
}

fn ranks(t: &Tables, cx: &Context<'_>) -> Option<Figure> {
    let r = t.ranks.as_ref()?;
    let measures = [
        ("subject_last", "subject-last hidden state after the layer", BLUE, Dash::Solid, Marker::Circle),
        ("attn_last", "MHSA output at the last position", VERMILION, Dash::Solid, Marker::Square),
        ("subject_last_at_extraction", "subject-last, where MHSA extracts", GREEN, Dash::Dashed, Marker::Triangle),
    ];
    let log = |v: f64| if v > 0.0 { v.log10() } else { f64::NAN };
    let s: Vec<Series> = measures
        .iter()
        .map(|&(m, label, color, dash, marker)| {
            let points = r
                .series(&[("measure", Key::s(m))], "layer")
                .into_iter()
                .filter_map(|(k, row)| {
                    let med = row.median?;
                    Some(Point { x: f64::from(k.as_i32()?) + 1.0, y: log(med.value), lo: log(med.ci_low), hi: log(med.ci_high) })
                })
                .collect();
            series(label, color, dash, points, true).with_marker(marker)
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    Some(Figure {
        name: "ranks",
        caption: "Rank comparison: median rank of the predicted token in the projection of the subject-last hidden state after layer ℓ (hidden_states[ℓ]) and of layer ℓ's MHSA output at the last position, per layer ℓ (log scale; 1 = top-1).".into(),
        chart: Chart {
            title: cx.title("Rank of the target by layer", t.count("examples:ranks")),
            x_label: "layer (1-based)".into(),
            y_label: "median rank of the target (log scale)".into(),
            series: s,
            hlines: vec![],
            log10_y: true,
            zero_line: false,
            note: format!("Bands: 95% percentile bootstrap CI of the median ({} resamples, seed {}).", cx.resamples, cx.seed),
            x_ticks: None,
        },
    })
}
