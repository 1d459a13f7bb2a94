//! Frame attributes between the ring's encoding (spec §4.3) and Python dicts.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString};
use streamd::ring::{AttrValue, AttributeArea};

/// An attribute copied out of a slot, so that it can become Python without the slot.
pub enum Owned {
    Int(i64),
    Float(f64),
    Text(String),
}

/// Copies the attributes of an encoded area; a malformed area gives what decoded before it.
pub fn decode(area: &[u8]) -> Vec<(String, Owned)> {
    streamd::ring::attributes(area)
        .map_while(Result::ok)
        .map(|(key, value)| {
            let value = match value {
                AttrValue::I64(v) => Owned::Int(v),
                AttrValue::F64(v) => Owned::Float(v),
                AttrValue::Str(s) => Owned::Text(s.to_string()),
            };
            (key.to_string(), value)
        })
        .collect()
}

pub fn to_dict<'py>(py: Python<'py>, attrs: &[(String, Owned)]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in attrs {
        match value {
            Owned::Int(v) => dict.set_item(key, v)?,
            Owned::Float(v) => dict.set_item(key, v)?,
            Owned::Text(v) => dict.set_item(key, v)?,
        }
    }
    Ok(dict)
}

/// Encodes a dict of int, float, bool and str values; anything else is refused by name.
pub fn encode(dict: &Bound<'_, PyDict>, area: &mut AttributeArea) -> PyResult<()> {
    for (key, value) in dict.iter() {
        let key: String = key.extract()?;
        let pushed = if value.is_instance_of::<PyBool>() {
            area.push(&key, &AttrValue::I64(i64::from(value.extract::<bool>()?)))
        } else if value.is_instance_of::<PyInt>() {
            area.push(&key, &AttrValue::I64(value.extract()?))
        } else if value.is_instance_of::<PyFloat>() {
            area.push(&key, &AttrValue::F64(value.extract()?))
        } else if value.is_instance_of::<PyString>() {
            let text: String = value.extract()?;
            area.push(&key, &AttrValue::Str(&text))
        } else if let Ok(v) = value.extract::<f64>() {
            // NumPy scalars and the like.
            area.push(&key, &AttrValue::F64(v))
        } else {
            return Err(PyValueError::new_err(format!(
                "attribute '{key}' is a {}; attributes are int, float, bool or str",
                value.get_type().name()?
            )));
        };
        pushed.map_err(|e| PyValueError::new_err(format!("attribute '{key}': {e}")))?;
    }
    Ok(())
}
