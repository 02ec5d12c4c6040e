//! Choosing where tensors live: CUDA when asked for or available, the CPU otherwise.

use candle_core::Device;

use crate::{Error, Result};

/// The user's choice of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The first CUDA GPU when this build supports CUDA and one works, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

/// What [`select_device`] picked, and why when it fell back to the CPU.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    /// The device to compute on.
    pub device: Device,
    /// A one-line notice when `auto` could not use a GPU that the build supports.
    pub notice: Option<String>,
}

/// Resolves a [`DeviceChoice`].
pub fn select_device(choice: DeviceChoice) -> Result<SelectedDevice> {
    match choice {
        DeviceChoice::Cpu => Ok(SelectedDevice {
            device: Device::Cpu,
            notice: None,
        }),
        DeviceChoice::Cuda => {
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Config(
                    "--device cuda: this binary was built without CUDA (cargo build --features cuda)"
                        .into(),
                ));
            }
            let device = Device::new_cuda(0)
                .map_err(|e| Error::Config(format!("--device cuda: no usable GPU: {e}")))?;
            Ok(SelectedDevice {
                device,
                notice: None,
            })
        }
        DeviceChoice::Auto => {
            if !candle_core::utils::cuda_is_available() {
                return Ok(SelectedDevice {
                    device: Device::Cpu,
                    notice: None,
                });
            }
            match Device::new_cuda(0) {
                Ok(device) => Ok(SelectedDevice {
                    device,
                    notice: None,
                }),
                Err(e) => Ok(SelectedDevice {
                    device: Device::Cpu,
                    notice: Some(format!("no usable CUDA GPU ({e}); running on the CPU")),
                }),
            }
        }
    }
}

/// A short name for logs and JSON: `cpu` or `cuda:0`.
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda:0".into(),
        Device::Metal(_) => "metal".into(),
    }
}
