//! Opens a memory image, times the open (header walk + page index), and prints a summary:
//! `cargo run --release -p introspect --example memimage -- IMAGE`.

use std::time::Instant;

use introspect::open_memory;

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: memimage IMAGE");
        std::process::exit(2);
    };
    let started = Instant::now();
    let image = match open_memory(&path) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let elapsed = started.elapsed();
    println!("format:     {:?} ({:?})", image.format(), image.guest_kind());
    println!("open+index: {:.1} ms", elapsed.as_secs_f64() * 1e3);
    println!(
        "pages:      {} present, max pfn {:x?}",
        image.page_count(),
        image.max_pfn()
    );
    for v in image.vcpus() {
        println!(
            "vcpu {}:     cr0 {:x?} cr3 {:x?} cr4 {:x?} root pfn {:x?}",
            v.id, v.cr0, v.cr3, v.cr4, v.root_table_pfn
        );
    }
    if let Some(config) = image.domain_config() {
        println!("domain:     {:?} {:?}", config.name, config.uuid);
    }
}
