//! One `[[node.point]]`: deadband, and its source (a simulator, or a
//! Modbus register with its data type, scale and range).

use std::ops::Range;

use serde_spanned::Spanned;

use crate::error::Sink;
use crate::model::{DataType, ModbusPoint, Point, Register, SimKind, SimSpec, Source};
use crate::raw::{RawPoint, RawSim};

use super::at_least_one;

pub(super) fn point(
    s: &mut Sink,
    raw: &RawPoint,
    has_modbus_table: bool,
    modbus_missing_reported: &mut bool,
) -> Option<Point> {
    let name = raw.name.get_ref();
    let deadband = raw.deadband.as_ref().and_then(|d| {
        let v = *d.get_ref();
        if v >= 0.0 && v.is_finite() {
            Some(v)
        } else {
            s.error(d.span(), format!("deadband = {v}: expected a number >= 0"));
            None
        }
    });
    let Some(source) = &raw.source else {
        s.error(
            raw.name.span(),
            format!(
                "point \"{name}\" has no source: expected source = \"sim\" or source = \"modbus\""
            ),
        );
        return None;
    };
    let source = match source.get_ref().as_str() {
        "sim" => sim_source(s, raw, source.span()),
        "modbus" => modbus_source(
            s,
            raw,
            source.span(),
            has_modbus_table,
            modbus_missing_reported,
        ),
        other => {
            s.error(
                source.span(),
                format!("source = {other:?}: expected \"sim\" or \"modbus\""),
            );
            None
        }
    }?;
    Some(Point {
        name: name.clone(),
        source,
        unit: raw.unit.clone(),
        writable: raw.writable.as_ref().is_some_and(|w| *w.get_ref()),
        deadband,
    })
}

fn sim_source(s: &mut Sink, raw: &RawPoint, source_span: Range<usize>) -> Option<Source> {
    let name = raw.name.get_ref();
    let modbus_only = [
        ("register", raw.register.as_ref().map(Spanned::span)),
        ("type", raw.data_type.as_ref().map(Spanned::span)),
        ("scale", raw.scale.as_ref().map(Spanned::span)),
    ];
    for (key, span) in modbus_only {
        if let Some(span) = span {
            s.error(
                span,
                format!("{key} only applies to modbus points; point \"{name}\" is a sim point"),
            );
        }
    }
    if let Some(w) = &raw.writable {
        if *w.get_ref() {
            s.error(
                w.span(),
                format!(
                    "sim point \"{name}\" cannot be writable: only modbus holding registers and coils accept writes"
                ),
            );
        }
    }
    let Some(sim) = &raw.sim else {
        s.error(
            source_span,
            format!("sim point \"{name}\" needs a sim table: expected sim = {{ kind = \"sine\" }}"),
        );
        return None;
    };
    sim_spec(s, name, sim).map(Source::Sim)
}

fn sim_spec(s: &mut Sink, name: &str, sim: &Spanned<RawSim>) -> Option<SimSpec> {
    let spec = sim.get_ref();
    let kind = match &spec.kind {
        None => {
            s.error(
                sim.span(),
                format!(
                    "sim table of point \"{name}\" needs kind: expected one of sine, ramp, random_walk, square"
                ),
            );
            None
        }
        Some(k) => match k.get_ref().parse::<SimKind>() {
            Ok(kind) => Some(kind),
            Err(err) => {
                s.error(k.span(), err.to_string());
                None
            }
        },
    };
    let period_s = match &spec.period_s {
        None => 30.0,
        Some(v) => {
            let p = *v.get_ref();
            if !(p > 0.0 && p.is_finite()) {
                s.error(
                    v.span(),
                    format!("period_s = {p}: expected a number of seconds > 0"),
                );
            }
            p
        }
    };
    let mut finite = |v: &Option<Spanned<f64>>, key: &str, default: f64| match v {
        None => default,
        Some(v) => {
            let x = *v.get_ref();
            if !x.is_finite() {
                s.error(v.span(), format!("{key} = {x}: expected a finite number"));
            }
            x
        }
    };
    let min = finite(&spec.min, "min", 0.0);
    let max = finite(&spec.max, "max", 100.0);
    if min > max {
        let span = spec
            .max
            .as_ref()
            .or(spec.min.as_ref())
            .map_or_else(|| sim.span(), Spanned::span);
        s.error(
            span,
            format!("max = {max} is below min = {min}: expected min <= max"),
        );
    }
    let every_ms = at_least_one(s, &spec.every_ms, "every_ms", 1000);
    Some(SimSpec {
        kind: kind?,
        period_s,
        min,
        max,
        every_ms,
    })
}

fn modbus_source(
    s: &mut Sink,
    raw: &RawPoint,
    source_span: Range<usize>,
    has_modbus_table: bool,
    missing_reported: &mut bool,
) -> Option<Source> {
    let name = raw.name.get_ref();
    if let Some(sim) = &raw.sim {
        s.error(
            sim.span(),
            format!("sim only applies to sim points; point \"{name}\" is a modbus point"),
        );
    }
    if !has_modbus_table && !*missing_reported {
        s.error(
            source_span.clone(),
            format!(
                "modbus point \"{name}\" needs the node's modbus table: expected modbus = {{ address = \"host:port\" }} on the node"
            ),
        );
        *missing_reported = true;
    }
    let register = match &raw.register {
        None => {
            s.error(
                source_span,
                format!(
                    "modbus point \"{name}\" needs register = \"holding:N\" (or input:N, coil:N, discrete:N)"
                ),
            );
            None
        }
        Some(r) => match r.get_ref().parse::<Register>() {
            Ok(reg) => Some((reg, r.span())),
            Err(err) => {
                s.error(r.span(), err.to_string());
                None
            }
        },
    };
    let explicit_type = match &raw.data_type {
        None => None,
        Some(t) => match t.get_ref().parse::<DataType>() {
            Ok(dt) => Some((dt, t.span())),
            Err(err) => {
                s.error(t.span(), err.to_string());
                return None;
            }
        },
    };
    let scale = match &raw.scale {
        None => 1.0,
        Some(v) => {
            let x = *v.get_ref();
            if !(x.is_finite() && x != 0.0) {
                s.error(
                    v.span(),
                    format!("scale = {x}: expected a finite non-zero number"),
                );
            }
            x
        }
    };
    let (register, register_span) = register?;
    let data_type = explicit_type
        .as_ref()
        .map_or_else(|| register.kind.default_data_type(), |(dt, _)| *dt);

    if register.kind.is_bit() && data_type != DataType::Bool {
        let span = explicit_type.map_or(register_span.clone(), |(_, span)| span);
        s.error(
            span,
            format!(
                "type = \"{data_type}\" does not fit {register}: coil and discrete registers hold type \"bool\""
            ),
        );
    }
    if data_type.registers() == 2 && register.address == u16::MAX {
        s.error(
            register_span,
            format!(
                "type \"{data_type}\" takes 2 registers but {register} is the last address: expected an address <= 65534"
            ),
        );
    }
    if let Some(w) = &raw.writable {
        if *w.get_ref() && !register.kind.is_writable() {
            s.error(
                w.span(),
                format!(
                    "point \"{name}\" on {register} cannot be writable: only holding registers and coils accept writes"
                ),
            );
        }
    }
    if let Some(v) = &raw.scale {
        if data_type == DataType::Bool && *v.get_ref() != 1.0 {
            s.error(
                v.span(),
                format!("scale does not apply to bool point \"{name}\""),
            );
        }
    }
    Some(Source::Modbus(ModbusPoint {
        register,
        data_type,
        scale,
    }))
}
