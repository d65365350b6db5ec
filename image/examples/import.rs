//! Imports an image from the command line and prints the record:
//!
//!     cargo run --release -p hermetic-image --example import -- SRC DEST

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [src, dest] = args.as_slice() else {
        eprintln!("usage: import SRC DEST");
        std::process::exit(2);
    };
    let start = Instant::now();
    match hermetic_image::import(src, dest, &hermetic_image::ImportOptions::default()) {
        Ok(image) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&image).expect("serializes")
            );
            eprintln!("imported in {:.1?}", start.elapsed());
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
