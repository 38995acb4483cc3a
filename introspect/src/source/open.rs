//! Format detection by magic.

use std::path::Path;

use crate::bytes::{hex_prefix, slice_at};
use crate::error::{Error, Result};
use crate::source::elf::{ELF_MAGIC, ElfCore, ElfHeaders, XenCore};
use crate::source::memory::{Backing, ImageFormat, PhysMemory};
use crate::source::raw::RawMemory;
use crate::source::xl_save::{XL_MAGIC, XlSaveImage};

/// Opens a memory image, choosing the format from its magic bytes: `xl save` images and ELF
/// cores (`xl dump-core` if it has `.xen_pages`, else PT_LOAD-based). Raw images have no
/// magic; open them with [`open_memory_as`] and [`ImageFormat::Raw`].
pub fn open_memory(path: impl AsRef<Path>) -> Result<Box<dyn PhysMemory>> {
    let path = path.as_ref();
    let data = Backing::map(path)?;
    let format = detect(&data).ok_or_else(|| Error::UnknownFormat {
        path: path.to_path_buf(),
        magic: hex_prefix(&data),
    })?;
    let format = match format {
        ImageFormat::ElfCore if ElfHeaders::parse(path, &data)?.is_xen_core() => ImageFormat::XenCore,
        f => f,
    };
    tracing::debug!("{}: {format:?} ({} bytes)", path.display(), data.len());
    open_backing(path, data, format)
}

/// Opens a memory image as the given format, without looking at its magic.
pub fn open_memory_as(path: impl AsRef<Path>, format: ImageFormat) -> Result<Box<dyn PhysMemory>> {
    let path = path.as_ref();
    open_backing(path, Backing::map(path)?, format)
}

/// The format named by the first bytes of an image, if any (an ELF core is reported as
/// [`ImageFormat::ElfCore`]; telling a dump-core apart needs its section table).
pub fn detect(data: &[u8]) -> Option<ImageFormat> {
    if slice_at(data, 0, XL_MAGIC.len() as u64) == Some(XL_MAGIC.as_slice()) {
        Some(ImageFormat::XlSave)
    } else if slice_at(data, 0, 4) == Some(ELF_MAGIC.as_slice()) {
        Some(ImageFormat::ElfCore)
    } else {
        None
    }
}

fn open_backing(path: &Path, data: Backing, format: ImageFormat) -> Result<Box<dyn PhysMemory>> {
    let path = path.to_path_buf();
    Ok(match format {
        ImageFormat::XlSave => Box::new(XlSaveImage::parse(path, data)?),
        ImageFormat::XenCore => Box::new(XenCore::parse(path, data)?),
        ImageFormat::ElfCore => Box::new(ElfCore::parse(path, data)?),
        ImageFormat::Raw => Box::new(RawMemory::parse(path, data)?),
        ImageFormat::XenLive => {
            return Err(Error::Unsupported {
                path,
                offset: 0,
                what: "format `xen-live` for a file".into(),
                remedy: "a live Xen domain is opened by domain id with `open_live_domain` (cargo feature `xen`)",
            });
        }
    })
}
