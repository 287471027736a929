//! mesh-waypoint: the L7 proxy (waypoint and ingress gateway modes).

fn main() {
    println!("mesh-waypoint: not implemented yet");
}
