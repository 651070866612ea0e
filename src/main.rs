fn main() {
    match pim_operator::api::crd::to_yaml() {
        Ok(y) => print!("{y}"),
        Err(e) => eprintln!("{e}"),
    }
}
