fn main() {
    eprintln!("vmrp: not wired yet");
    std::process::exit(2);
}
