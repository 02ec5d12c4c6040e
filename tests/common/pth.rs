//! Writes tensors as PyTorch writes a `state_dict` with `torch.save` (a zip archive holding
//! `archive/data.pkl`, a protocol-2 pickle whose tensors point at `archive/data/<i>`): the
//! format of the official DINO `*_pretrain.pth` files, for tests that need one at full size.

use std::io::Write;
use std::path::Path;

/// A tensor to write: name, shape, values (row-major f32).
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

fn binunicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn binint(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

fn int_tuple(out: &mut Vec<u8>, values: &[usize]) {
    out.push(b'(');
    for &v in values {
        binint(out, v);
    }
    out.push(b't');
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The pickle of a `{name: tensor}` dict whose i-th tensor is storage `i`.
fn state_dict_pickle(tensors: &[NamedTensor]) -> Vec<u8> {
    let mut out = vec![0x80, 2, b'}', b'('];
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        binunicode(&mut out, name);
        global(&mut out, "torch._utils", "_rebuild_tensor_v2");
        out.push(b'(');
        out.push(b'(');
        binunicode(&mut out, "storage");
        global(&mut out, "torch", "FloatStorage");
        binunicode(&mut out, &i.to_string());
        binunicode(&mut out, "cpu");
        binint(&mut out, values.len());
        out.extend_from_slice(b"tQ");
        binint(&mut out, 0);
        int_tuple(&mut out, shape);
        int_tuple(&mut out, &contiguous_strides(shape));
        out.push(0x89);
        global(&mut out, "collections", "OrderedDict");
        out.extend_from_slice(b")R");
        out.extend_from_slice(b"tR");
    }
    out.extend_from_slice(b"u.");
    out
}

/// Writes `tensors` to `path` in the `torch.save` zip format.
pub fn write_pth(path: &Path, tensors: &[NamedTensor]) -> Result<(), Box<dyn std::error::Error>> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    zip.start_file("archive/data.pkl", stored)?;
    zip.write_all(&state_dict_pickle(tensors))?;
    for (i, (_, _, values)) in tensors.iter().enumerate() {
        zip.start_file(format!("archive/data/{i}"), stored)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        zip.write_all(&bytes)?;
    }
    zip.start_file("archive/version", stored)?;
    zip.write_all(b"3\n")?;
    zip.finish()?;
    Ok(())
}
