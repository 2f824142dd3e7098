//! Where the forward pass runs its weight matrix products: the `gemm` crate on the CPU (the default, always
//! built), or burn tensors on one of burn's backends, each behind a cargo feature of this crate:
//! `burn-cpu` (burn's pure-Rust `flex` CPU backend) and `burn-wgpu` (burn's wgpu backend: Vulkan, Metal or
//! DX12 GPUs).
//!
//! Only the products of the activations with the weight matrices (Q/K/V/output projections, the FFN and the
//! output head) go to the chosen device: the input rows and the layer's dequantized `f32` weight are uploaded,
//! multiplied there (`x · wᵀ`) and read back. Everything else, attention included, stays on the CPU code of
//! [`crate::ops`], so one model definition serves every device and only the matrix-product dispatch differs.

use std::fmt;
use std::str::FromStr;

use crate::error::{EvalError, Result};
use crate::ops;

/// A device for the forward pass's matrix products. All variants exist in every build; one whose cargo
/// feature is not compiled in is refused by [`Device::check`] (and so by [`Device::from_str`] and
/// [`crate::LlamaModel::set_device`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Device {
    /// The `gemm` crate on the CPU (always built, the default).
    #[default]
    Cpu,
    /// burn's `flex` backend (pure-Rust CPU): cargo feature `burn-cpu`.
    BurnCpu,
    /// burn's `wgpu` backend on the default adapter (a GPU through Vulkan/Metal/DX12): cargo feature
    /// `burn-wgpu`.
    Wgpu,
}

impl Device {
    /// Every device, in the order of the names accepted by [`Device::from_str`].
    pub const ALL: [Device; 3] = [Device::Cpu, Device::BurnCpu, Device::Wgpu];

    /// The name `--device` takes.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::BurnCpu => "burn-cpu",
            Device::Wgpu => "wgpu",
        }
    }

    /// The cargo feature that builds it (`None` for the always-built CPU path).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Device::Cpu => None,
            Device::BurnCpu => Some("burn-cpu"),
            Device::Wgpu => Some("burn-wgpu"),
        }
    }

    /// Whether this build includes it.
    pub fn is_built(self) -> bool {
        match self {
            Device::Cpu => true,
            Device::BurnCpu => cfg!(feature = "burn-cpu"),
            Device::Wgpu => cfg!(feature = "burn-wgpu"),
        }
    }

    /// `Ok(self)` if this build includes it, else [`EvalError::DeviceNotBuilt`].
    pub fn check(self) -> Result<Device> {
        match self.feature() {
            Some(feature) if !self.is_built() => Err(EvalError::DeviceNotBuilt { device: self.name(), feature }),
            _ => Ok(self),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Device {
    type Err = EvalError;

    /// `cpu`, `burn-cpu` or `wgpu`; a device this build does not include is an error.
    fn from_str(s: &str) -> Result<Device> {
        let device = Device::ALL.into_iter().find(|d| d.name() == s).ok_or_else(|| EvalError::BadOption {
            message: format!("unknown device '{s}' (expected cpu, burn-cpu or wgpu)"),
        })?;
        device.check()
    }
}

/// The matrix-product executor of one forward pass on a [`Device`].
pub(crate) enum Matmul {
    Cpu,
    #[cfg(any(feature = "burn-cpu", feature = "burn-wgpu"))]
    Burn(burn_backend::BurnMatmul),
}

impl Matmul {
    /// The executor for `device` (which must be built: see [`Device::check`]).
    pub fn new(device: Device) -> Result<Matmul> {
        match device.check()? {
            Device::Cpu => Ok(Matmul::Cpu),
            #[cfg(feature = "burn-cpu")]
            Device::BurnCpu => Ok(Matmul::Burn(burn_backend::BurnMatmul::flex())),
            #[cfg(feature = "burn-wgpu")]
            Device::Wgpu => Ok(Matmul::Burn(burn_backend::BurnMatmul::wgpu()?)),
            #[allow(unreachable_patterns)] // reached only for devices `check` refuses
            other => Err(EvalError::DeviceNotBuilt { device: other.name(), feature: other.feature().unwrap_or("") }),
        }
    }

    /// `out[m x n] = x[m x k] · wᵀ` where `w` is `n x k` row-major, as [`ops::matmul_t`].
    pub fn matmul_t(&self, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Matmul::Cpu => {
                ops::matmul_t(x, m, k, w, n, out);
                Ok(())
            }
            #[cfg(any(feature = "burn-cpu", feature = "burn-wgpu"))]
            Matmul::Burn(b) => b.matmul_t(x, m, k, w, n, out),
        }
    }
}

#[cfg(any(feature = "burn-cpu", feature = "burn-wgpu"))]
mod burn_backend {
    use burn::tensor::{DType, Device, Tensor, TensorData};

    use crate::error::{EvalError, Result};

    /// Matrix products as burn tensors on one burn device.
    pub struct BurnMatmul {
        device: Device,
    }

    impl BurnMatmul {
        /// burn's pure-Rust CPU backend.
        #[cfg(feature = "burn-cpu")]
        pub fn flex() -> BurnMatmul {
            BurnMatmul { device: Device::flex() }
        }

        /// burn's wgpu backend on the default adapter (wgpu's choice, high-power GPU first). The device is
        /// chosen explicitly, as `Device::default()` would pick whichever backend burn ranks first among those
        /// compiled in, and initialized once per process so that a machine without a usable adapter gives an
        /// error rather than a panic in the first tensor operation.
        #[cfg(feature = "burn-wgpu")]
        pub fn wgpu() -> Result<BurnMatmul> {
            static DEVICE: std::sync::OnceLock<std::result::Result<Device, String>> = std::sync::OnceLock::new();
            match DEVICE.get_or_init(|| Device::wgpu_options().init().map_err(|e| e.to_string())) {
                Ok(device) => Ok(BurnMatmul { device: device.clone() }),
                Err(e) => Err(EvalError::Backend { message: format!("wgpu: {e}") }),
            }
        }

        fn upload(&self, values: &[f32], rows: usize, cols: usize) -> Tensor<2> {
            let data = TensorData::new(values[..rows * cols].to_vec(), [rows, cols]);
            Tensor::from_data(data, (&self.device, DType::F32))
        }

        pub fn matmul_t(&self, x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
            assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul_t buffer sizes");
            if m == 0 || n == 0 {
                return Ok(());
            }
            let y = self.upload(x, m, k).matmul(self.upload(w, n, k).transpose());
            let err = |e: &dyn std::fmt::Display| EvalError::Backend { message: format!("burn matmul: {e}") };
            let data = y.try_into_data().map_err(|e| err(&e))?;
            let values = data.as_slice::<f32>().map_err(|e| err(&e))?;
            out[..m * n].copy_from_slice(values);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unbuilt_devices_are_refused() {
        for d in Device::ALL {
            assert_eq!(d.to_string(), d.name());
            match d.name().parse::<Device>() {
                Ok(parsed) => assert!(parsed == d && d.is_built()),
                Err(e) => {
                    assert!(!d.is_built());
                    let feature = d.feature().unwrap();
                    assert_eq!(
                        e.to_string(),
                        format!("this build has no {d} support (build with --features {feature})")
                    );
                }
            }
        }
        assert!(Device::Cpu.is_built());
        assert!("gpu".parse::<Device>().unwrap_err().to_string().contains("expected cpu, burn-cpu or wgpu"));
    }

    #[test]
    fn cpu_matmul_is_ops_matmul_t() {
        let (m, k, n) = (3, 5, 4);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.25 - 1.0).collect();
        let w: Vec<f32> = (0..n * k).map(|i| 0.5 - i as f32 * 0.125).collect();
        let mut want = vec![0.0; m * n];
        ops::matmul_t(&x, m, k, &w, n, &mut want);
        for d in Device::ALL.into_iter().filter(|d| *d != Device::Wgpu && d.is_built()) {
            let mut got = vec![0.0; m * n];
            Matmul::new(d).unwrap().matmul_t(&x, m, k, &w, n, &mut got).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{d}: {got:?} vs {want:?}");
            }
        }
    }
}
