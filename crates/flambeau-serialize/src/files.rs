//! The file-system rules every reader and writer shares: atomic replacement of regular files
//! only, symlinks written through, and errors that name the user's path.
//!
//! A save writes a temporary file next to its destination, fsyncs it and renames it over the
//! destination, so a kill at any instant leaves the old file or the new one. Renaming over a
//! device node, a FIFO or a socket would replace that node with a regular file (as root,
//! `save(x, "/dev/null")` would destroy `/dev/null`), and over a directory it fails with a
//! confusing message; both are refused before anything is written. A symlink is written
//! through: its target is replaced atomically and the link stays, pointing at the new file.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What kind of non-regular file a path is, in words.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The file a save to `path` replaces: `path` itself, or the target of a symlink (written
/// through). Directories, devices, FIFOs, sockets and dangling symlinks are refused.
pub(crate) fn output_target(path: &Path) -> Result<PathBuf> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(write_error(path, e)),
    };
    let (target, meta) = if meta.file_type().is_symlink() {
        match fs::canonicalize(path) {
            Ok(t) => {
                let m = fs::metadata(&t).map_err(|e| write_error(path, e))?;
                (t, m)
            }
            Err(_) => {
                return Err(Error::NotAFileOutput {
                    path: path.to_path_buf(),
                    what: "a symlink whose target does not exist".into(),
                })
            }
        }
    } else {
        (path.to_path_buf(), meta)
    };
    if !meta.is_file() {
        let what = if target == path {
            kind_of(&meta).to_string()
        } else {
            format!("a symlink to {} ({})", target.display(), kind_of(&meta))
        };
        return Err(Error::NotAFileOutput {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(target)
}

/// An I/O error while writing `path` (the user's path, never the temporary file), with the
/// likely cause when there is one.
pub(crate) fn write_error(path: &Path, source: std::io::Error) -> Error {
    let hint = match source.kind() {
        ErrorKind::NotFound => match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(dir) if !dir.exists() => format!(
                " (the directory {} does not exist; create it first)",
                dir.display()
            ),
            _ => String::new(),
        },
        ErrorKind::StorageFull => {
            " (the disk is full; the previous file, if any, is left as it was)".into()
        }
        ErrorKind::PermissionDenied => " (no permission to write there)".into(),
        _ => String::new(),
    };
    Error::Write {
        path: path.to_path_buf(),
        source,
        hint,
    }
}

/// Writes `path` atomically: `write` fills a temporary file in the destination's directory,
/// which is then fsynced and renamed over the destination (or a symlink's target, see
/// [`output_target`]). On any error the temporary file is removed and the error names `path`.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let target = output_target(path)?;
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        write(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| write_error(path, e))?;
        fs::rename(&tmp, &target).map_err(|e| write_error(path, e))?;
        // Make the rename itself durable; some filesystems cannot sync a directory.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    // Errors raised while writing the temporary file name the user's path instead.
    result.map_err(|e| match e {
        Error::Io { source, .. } => write_error(path, source),
        other => other,
    })
}

/// Makes `dst` an independent copy of `src`, atomically (see [`write_atomically`]). The copy is
/// `std::fs::copy`, which on Linux is `copy_file_range`: the kernel clones the extents (a
/// reflink, no data written) on filesystems that share them (btrfs, XFS) and copies in the
/// kernel elsewhere. Either way `dst` is its own inode: overwriting one file in place never
/// changes the other.
pub(crate) fn copy_atomically(src: &Path, dst: &Path) -> Result<()> {
    write_atomically(dst, |tmp| {
        fs::copy(src, tmp).map_err(|e| Error::io(tmp, e))?;
        Ok(())
    })
}

/// An error opening or mapping `path` for reading, saying so when it is a directory (the OS
/// says "No such device" when a directory is memory-mapped).
pub(crate) fn read_error(path: &Path, source: std::io::Error) -> Error {
    if path.is_dir() {
        return Error::InputIsADirectory(path.to_path_buf());
    }
    Error::io(path, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk shows up while the archive is streamed into the temporary file (the zip
    /// writer reports it as `<archive>`): the error names the user's path and the cause, the
    /// previous file is intact and the temporary file is gone.
    #[test]
    fn a_full_disk_names_the_users_path_and_keeps_the_previous_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.pth");
        fs::write(&path, b"previous good checkpoint").unwrap();
        let err = write_atomically(&path, |tmp| {
            fs::write(tmp, b"half a checkp").unwrap();
            Err(Error::io(
                "<archive>",
                std::io::Error::from(ErrorKind::StorageFull),
            ))
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(&format!("cannot write {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("the disk is full"), "{err}");
        assert!(
            !err.contains("<archive>") && !err.contains(".tmp-"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"previous good checkpoint");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
