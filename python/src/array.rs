//! NumPy arrays over memory this module does not own: a ring slot. The array's base
//! object keeps whatever keeps the memory valid.

use numpy::npyffi::{self, npy_intp, PY_ARRAY_API};
use numpy::{PyArrayDescr, PyArrayDescrMethods};
use pyo3::prelude::*;
use streamd::ring::Dtype;

/// The NumPy dtype of a ring dtype.
pub fn descr(py: Python<'_>, dtype: Dtype) -> Bound<'_, PyArrayDescr> {
    match dtype {
        Dtype::U8 => numpy::dtype::<u8>(py),
        Dtype::U16 => numpy::dtype::<u16>(py),
        Dtype::U32 => numpy::dtype::<u32>(py),
        Dtype::U64 => numpy::dtype::<u64>(py),
        Dtype::I8 => numpy::dtype::<i8>(py),
        Dtype::I16 => numpy::dtype::<i16>(py),
        Dtype::I32 => numpy::dtype::<i32>(py),
        Dtype::I64 => numpy::dtype::<i64>(py),
        Dtype::F32 => numpy::dtype::<f32>(py),
        Dtype::F64 => numpy::dtype::<f64>(py),
    }
}

/// The ring dtype of a NumPy dtype, or a sentence saying which ones exist.
pub fn ring_dtype(d: &Bound<'_, PyArrayDescr>) -> Result<Dtype, String> {
    let py = d.py();
    for dtype in Dtype::ALL {
        if d.is_equiv_to(&descr(py, dtype)) {
            return Ok(dtype);
        }
    }
    Err(format!(
        "dtype {} cannot travel in a ring; use an integer type of 8 to 64 bits, float32 or float64 (little-endian)",
        d.str().map(|s| s.to_string()).unwrap_or_default()
    ))
}

/// A C-contiguous array of `dtype` and `shape` over `data`, read-only unless
/// `writable`, whose base object is `base`.
///
/// # Safety
/// `data` must point to `shape`'s product times the dtype's size bytes, aligned for the
/// dtype, that stay valid (and, if `writable`, writable by nothing else) for as long as
/// `base` lives.
pub unsafe fn over<'py>(
    py: Python<'py>,
    dtype: Dtype,
    shape: &[u32],
    data: *mut u8,
    writable: bool,
    base: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let mut dims: Vec<npy_intp> = shape.iter().map(|&d| d as npy_intp).collect();
    let flags = npyffi::NPY_ARRAY_C_CONTIGUOUS
        | npyffi::NPY_ARRAY_ALIGNED
        | if writable {
            npyffi::NPY_ARRAY_WRITEABLE
        } else {
            0
        };
    // SAFETY: the array type object and a new dtype reference (stolen by the call), with
    // dims of `shape.len()` entries; the memory is the caller's promise above.
    let ptr = unsafe {
        PY_ARRAY_API.PyArray_NewFromDescr(
            py,
            PY_ARRAY_API.get_type_object(py, npyffi::NpyTypes::PyArray_Type),
            descr(py, dtype).into_dtype_ptr(),
            dims.len() as std::os::raw::c_int,
            dims.as_mut_ptr(),
            std::ptr::null_mut(),
            data.cast(),
            flags,
            std::ptr::null_mut(),
        )
    };
    if ptr.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `ptr` is a new reference to an array; SetBaseObject steals the reference to
    // `base` we pass (into_ptr), and on failure the array still owns nothing.
    let array = unsafe { Bound::from_owned_ptr(py, ptr) };
    if unsafe { PY_ARRAY_API.PyArray_SetBaseObject(py, ptr.cast(), base.into_ptr()) } != 0 {
        return Err(PyErr::fetch(py));
    }
    Ok(array)
}

/// Makes an array read-only (a producer's slot array once the slot is published).
pub fn freeze(array: &Bound<'_, PyAny>) {
    // SAFETY: `array` is one of our arrays (made by `over`), so it is a PyArrayObject;
    // clearing WRITEABLE is what `ndarray.setflags(write=False)` does.
    unsafe {
        let object = array.as_ptr().cast::<npyffi::PyArrayObject>();
        (*object).flags &= !npyffi::NPY_ARRAY_WRITEABLE;
    }
}
