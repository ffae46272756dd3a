//! The CUDA side of [`crate::fused`]'s pairwise MLS: launches the kernels of
//! `kernels/mls_pairwise.cu` (compiled to PTX by `build.rs`) on candle's stream.
//!
//! The module is loaded once per device through candle's custom-module cache
//! (`CudaDevice::get_or_load_custom_func`). `f32`, `f16` and `bf16` are computed in `f32`,
//! `f64` in `f64`. Launch shapes mirror the constants at the end of the `.cu` file, which
//! traps if launched with another block shape.

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorageSlice as S, WrapErr};
use candle_core::{CudaStorage, Layout, Result, Shape};

use crate::distance::MLS_EPS;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mls_pairwise.ptx"));
const MODULE: &str = "medprob_mls_pairwise";

/// A forward launch shape: threads per block and rows of each side per block.
struct Tiling {
    name: &'static str,
    block: (u32, u32),
    rows_x: usize,
    rows_y: usize,
}

/// Both sides larger than [`NARROW_MAX_ROWS`]: 64×64 outputs per block, 4×4 per thread.
const WIDE: Tiling = Tiling {
    name: "wide",
    block: (16, 16),
    rows_x: 64,
    rows_y: 64,
};
/// One side small (a few queries against a gallery): that side goes on x, 4 of its rows
/// against 256 of the other per block, so few threads idle and the large side is read
/// `⌈small / 4⌉` times.
const NARROW: Tiling = Tiling {
    name: "narrow",
    block: (64, 4),
    rows_x: 4,
    rows_y: 256,
};
const NARROW_MAX_ROWS: usize = 16;
/// Backward: 32 rows × 32 dimensions of one side per block; `gridDim.z` = the two sides.
const BWD_BLOCK: (u32, u32) = (32, 8);
const BWD_ROWS: usize = 32;
const BWD_DIMS: usize = 32;
/// CUDA's limit on `gridDim.y`; the kernels walk further row tiles grid-stride.
const MAX_GRID_Y: usize = 65_535;

fn grid_dim(what: &str, blocks: usize) -> Result<u32> {
    u32::try_from(blocks)
        .ok()
        .filter(|&b| b <= i32::MAX as u32)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{what}: {blocks} blocks along one grid axis exceed CUDA's limit"
            ))
        })
}

/// A contiguous `[rows, 2d]` input as a device view, with its number of rows.
fn rows<'a, T>(
    s: &'a CudaSlice<T>,
    l: &Layout,
    d: usize,
    what: &str,
) -> Result<(CudaView<'a, T>, usize)> {
    let dims = l.shape().dims();
    if dims.len() != 2 || dims[1] != 2 * d {
        candle_core::bail!("{what}: expected [N, {}], got {dims:?}", 2 * d);
    }
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous");
    };
    Ok((s.slice(start..end), dims[0]))
}

/// An output buffer of `len` elements that the kernel writes in full. CUDA cannot allocate
/// zero bytes, so an empty result gets one unused element (candle allows storage longer
/// than its layout).
fn output<T: DeviceRepr + ValidAsZeroBits>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    if len == 0 {
        return dev.alloc_zeros::<T>(1);
    }
    // SAFETY: every element is written by the kernel launched next on the same stream
    // before anything reads it.
    unsafe { dev.alloc::<T>(len) }
}

fn same_device(what: &str, devices: &[&CudaDevice]) -> Result<()> {
    if devices.windows(2).any(|w| !w[0].same_device(w[1])) {
        candle_core::bail!("{what}: inputs are on different CUDA devices");
    }
    Ok(())
}

/// `[N, 2D] × [M, 2D] → [N, M]` MLS.
pub(crate) fn forward(
    d: usize,
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
) -> Result<(CudaStorage, Shape)> {
    const WHAT: &str = "mls-pairwise (CUDA)";
    same_device(WHAT, &[&s1.device, &s2.device])?;
    let dev = &s1.device;
    let slice = match (&s1.slice, &s2.slice) {
        (S::F32(a), S::F32(b)) => S::F32(launch_forward(dev, "f32", a, l1, b, l2, d)?),
        (S::F64(a), S::F64(b)) => S::F64(launch_forward(dev, "f64", a, l1, b, l2, d)?),
        (S::F16(a), S::F16(b)) => S::F16(launch_forward(dev, "f16", a, l1, b, l2, d)?),
        (S::BF16(a), S::BF16(b)) => S::BF16(launch_forward(dev, "bf16", a, l1, b, l2, d)?),
        _ => candle_core::bail!(
            "{WHAT}: supports f32, f64, f16 and bf16 with both sides of one dtype, got {:?} and {:?}",
            s1.dtype(),
            s2.dtype()
        ),
    };
    let shape = Shape::from((l1.dims()[0], l2.dims()[0]));
    Ok((
        CudaStorage {
            slice,
            device: dev.clone(),
        },
        shape,
    ))
}

fn launch_forward<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    suffix: &str,
    a: &CudaSlice<T>,
    la: &Layout,
    b: &CudaSlice<T>,
    lb: &Layout,
    d: usize,
) -> Result<CudaSlice<T>> {
    const WHAT: &str = "mls-pairwise (CUDA)";
    let (a, n) = rows(a, la, d, WHAT)?;
    let (b, m) = rows(b, lb, d, WHAT)?;
    let mut out = output::<T>(dev, n * m)?;
    if n == 0 || m == 0 {
        return Ok(out);
    }
    // The narrow tiling puts the smaller side on x; the output strides keep [N, M] order.
    let (tiling, x, y, nx, ny, stride_x, stride_y) = if n.min(m) > NARROW_MAX_ROWS {
        (&WIDE, &a, &b, n, m, m, 1)
    } else if n <= m {
        (&NARROW, &a, &b, n, m, m, 1)
    } else {
        (&NARROW, &b, &a, m, n, 1, m)
    };
    let config = LaunchConfig {
        grid_dim: (
            grid_dim(WHAT, ny.div_ceil(tiling.rows_y))?,
            grid_dim(WHAT, nx.div_ceil(tiling.rows_x).min(MAX_GRID_Y))?,
            1,
        ),
        block_dim: (tiling.block.0, tiling.block.1, 1),
        shared_mem_bytes: 0,
    };
    let name = format!("mls_fwd_{}_{suffix}", tiling.name);
    let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
    let (nx, ny, d) = (nx as i64, ny as i64, d as i64);
    let (stride_x, stride_y) = (stride_x as i64, stride_y as i64);
    let mut builder = func.builder();
    builder
        .arg(x)
        .arg(y)
        .arg(&mut out)
        .arg(&nx)
        .arg(&ny)
        .arg(&d)
        .arg(&stride_x)
        .arg(&stride_y)
        .arg(&MLS_EPS);
    // SAFETY: the arguments match the kernel's signature (pointers to T, five i64, one
    // f64); the views hold nx·2d and ny·2d elements and `out` nx·ny, the extents the
    // kernel reads and writes; the block shape is the one the kernel is compiled for.
    unsafe { builder.launch(config) }.w()?;
    Ok(out)
}

/// `(a [N, 2D], b [M, 2D], G [N, M]) → [N + M, 2D]`: the gradients of `Σ G ⊙ MLS(a, b)`.
pub(crate) fn backward(
    d: usize,
    (s1, l1): (&CudaStorage, &Layout),
    (s2, l2): (&CudaStorage, &Layout),
    (s3, l3): (&CudaStorage, &Layout),
) -> Result<(CudaStorage, Shape)> {
    const WHAT: &str = "mls-pairwise-grad (CUDA)";
    same_device(WHAT, &[&s1.device, &s2.device, &s3.device])?;
    let dev = &s1.device;
    let slice = match (&s1.slice, &s2.slice, &s3.slice) {
        (S::F32(a), S::F32(b), S::F32(g)) => {
            S::F32(launch_backward(dev, "f32", (a, l1), (b, l2), (g, l3), d)?)
        }
        (S::F64(a), S::F64(b), S::F64(g)) => {
            S::F64(launch_backward(dev, "f64", (a, l1), (b, l2), (g, l3), d)?)
        }
        (S::F16(a), S::F16(b), S::F16(g)) => {
            S::F16(launch_backward(dev, "f16", (a, l1), (b, l2), (g, l3), d)?)
        }
        (S::BF16(a), S::BF16(b), S::BF16(g)) => {
            S::BF16(launch_backward(dev, "bf16", (a, l1), (b, l2), (g, l3), d)?)
        }
        _ => candle_core::bail!(
            "{WHAT}: supports f32, f64, f16 and bf16 with all inputs of one dtype, got {:?}, {:?} and {:?}",
            s1.dtype(),
            s2.dtype(),
            s3.dtype()
        ),
    };
    let shape = Shape::from((l1.dims()[0] + l2.dims()[0], 2 * d));
    Ok((
        CudaStorage {
            slice,
            device: dev.clone(),
        },
        shape,
    ))
}

type Input<'a, T> = (&'a CudaSlice<T>, &'a Layout);

fn launch_backward<T: DeviceRepr + ValidAsZeroBits>(
    dev: &CudaDevice,
    suffix: &str,
    (a, la): Input<'_, T>,
    (b, lb): Input<'_, T>,
    (g, lg): Input<'_, T>,
    d: usize,
) -> Result<CudaSlice<T>> {
    const WHAT: &str = "mls-pairwise-grad (CUDA)";
    let (a, n) = rows(a, la, d, WHAT)?;
    let (b, m) = rows(b, lb, d, WHAT)?;
    let Some((start, end)) = lg.contiguous_offsets() else {
        candle_core::bail!("{WHAT}: the upstream gradient must be contiguous");
    };
    if end - start != n * m {
        candle_core::bail!(
            "{WHAT}: upstream gradient has {} values for [{n}, {m}]",
            end - start
        );
    }
    let g = g.slice(start..end);
    if n == 0 || m == 0 {
        // No pairs: every gradient is zero.
        return dev.alloc_zeros::<T>(((n + m) * 2 * d).max(1));
    }
    let mut out = output::<T>(dev, (n + m) * 2 * d)?;
    let config = LaunchConfig {
        grid_dim: (
            grid_dim(WHAT, d.div_ceil(BWD_DIMS))?,
            grid_dim(WHAT, n.max(m).div_ceil(BWD_ROWS).min(MAX_GRID_Y))?,
            2,
        ),
        block_dim: (BWD_BLOCK.0, BWD_BLOCK.1, 1),
        shared_mem_bytes: 0,
    };
    let func = dev.get_or_load_custom_func(&format!("mls_bwd_{suffix}"), MODULE, PTX)?;
    let (n, m, d) = (n as i64, m as i64, d as i64);
    let mut builder = func.builder();
    builder
        .arg(&a)
        .arg(&b)
        .arg(&g)
        .arg(&mut out)
        .arg(&n)
        .arg(&m)
        .arg(&d)
        .arg(&MLS_EPS);
    // SAFETY: the arguments match the kernel's signature (pointers to T, three i64, one
    // f64); the views hold n·2d, m·2d and n·m elements and `out` (n + m)·2d, the extents
    // the kernel reads and writes; the block shape is the one the kernel is compiled for.
    unsafe { builder.launch(config) }.w()?;
    Ok(out)
}
