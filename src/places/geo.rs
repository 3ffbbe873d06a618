//! Where on the earth: a nearby search's centre and radius, discs, distances
//! and longitudes, shared by the answers, their keys and the rendered
//! replies. A leaf: it imports nothing of herd.
//! It must stay pure: no I/O, no clock, no runtime types.

/// Mean earth radius in metres, shared by `distance_m`, the offline placement and the grid.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A nearby search request: centre and radius in metres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NearbyQuery {
    /// Latitude of the centre, degrees.
    pub lat: f64,
    /// Longitude of the centre, degrees.
    pub lon: f64,
    /// Search radius, metres.
    pub radius_m: f64,
}

/// A disc on the earth: the client's own search area, used to keep only the results
/// inside it when the upstream was asked about a larger, snapped area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Disc {
    /// Latitude of the centre, degrees.
    pub lat: f64,
    /// Longitude of the centre, degrees.
    pub lon: f64,
    /// Radius, metres.
    pub radius_m: f64,
}

impl Disc {
    /// Whether the point (degrees) lies in the disc, edge included.
    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        distance_m(self.lat, self.lon, lat, lon) <= self.radius_m
    }
}

/// Wraps a longitude into [-180, 180]; in-range values are returned bit-for-bit unchanged.
pub fn wrap_lon(lon: f64) -> f64 {
    if (-180.0..=180.0).contains(&lon) {
        lon
    } else {
        (lon + 180.0).rem_euclid(360.0) - 180.0
    }
}

/// Great-circle (haversine) distance in metres between two points given in degrees.
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = phi2 - phi1;
    let d_lambda = (lon2 - lon1).to_radians();
    let a = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    // Rounding can push `a` a hair outside [0, 1]; clamp so sqrt never sees a negative.
    let a = a.clamp(0.0, 1.0);
    2.0 * EARTH_RADIUS_M * a.sqrt().atan2((1.0 - a).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_is_zero_to_itself_and_about_111_km_per_degree() {
        assert_eq!(distance_m(12.0, 34.0, 12.0, 34.0), 0.0);
        assert!((distance_m(0.0, 0.0, 1.0, 0.0) - 111_195.08).abs() < 1.0);
        assert!(distance_m(0.0, 179.9, 0.0, -179.9) < 23_000.0);
    }
}
