//! `cargo +nightly fuzz run btf`: the BTF parser and its lookups on arbitrary bytes.
#![no_main]

use introspect::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse("fuzz.btf", data.to_vec()) else {
        return;
    };
    // Whatever was accepted must answer every question without panicking or hanging.
    for id in 0..btf.type_count().min(256) {
        let _ = (btf.resolve(id), btf.size_of(id), btf.array(id), btf.pointee(id), btf.name(id), btf.kind(id));
        if let Ok(members) = btf.members(id) {
            for m in members.take(16) {
                let _ = btf.member_of(id, m.name);
                let _ = btf.member_of(id, &format!("{}.{}", m.name, m.name));
            }
        }
        if let Some(name) = btf.name(id) {
            let _ = (btf.find_container(name), btf.enum_value(name), btf.datasec_var(".data..percpu", name));
        }
    }
    let _ = btf.member("task_struct", "tasks.next");
});
