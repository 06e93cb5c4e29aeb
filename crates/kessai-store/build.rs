//! Rebuild when a migration file is added or edited: `sqlx::migrate!` embeds
//! the migration directories at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
