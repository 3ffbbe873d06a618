//! Which upstream Nearby Search answers a query: its key, the query rounded as it is
//! sent, and the optional grid that snaps near queries onto one key so that a shard
//! asks the upstream once for all of them (`places.snap_m`, see tuning.md).
//! It owns the rounding and snapping rules; the cache and the requests use its keys.
//! It must stay pure: no I/O, no clock, no runtime types.

use crate::places::geo::{wrap_lon, Disc, NearbyQuery, EARTH_RADIUS_M};

/// Google's largest Nearby Search radius, metres; a snapped radius never asks for more.
pub const MAX_RADIUS_M: f64 = 50_000.0;

/// Metres along a meridian per degree of latitude, on the mean earth sphere.
const METRES_PER_DEGREE: f64 = EARTH_RADIUS_M * std::f64::consts::PI / 180.0;

/// Cache and single-flight key: the query as actually sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryKey {
    /// Latitude in millionths of a degree (6 decimals, rounded).
    pub lat_e6: i64,
    /// Longitude in millionths of a degree (6 decimals, rounded).
    pub lng_e6: i64,
    /// Radius in whole metres, at least 1.
    pub radius_m: u64,
}

impl QueryKey {
    /// The key of a query, or `None` when it holds a non-finite number.
    pub fn from_query(query: NearbyQuery) -> Option<QueryKey> {
        let NearbyQuery { lat, lon, radius_m } = query;
        if !(lat.is_finite() && lon.is_finite() && radius_m.is_finite()) {
            return None;
        }
        // `as` saturates on overflow, which is fine: absurd values stay absurd and Google rejects them.
        Some(QueryKey {
            lat_e6: (lat * 1e6).round() as i64,
            lng_e6: (lon * 1e6).round() as i64,
            radius_m: radius_m.round().max(1.0) as u64,
        })
    }

    /// The query this key sends.
    pub fn query(&self) -> NearbyQuery {
        NearbyQuery {
            lat: self.lat_e6 as f64 / 1e6,
            lon: self.lng_e6 as f64 / 1e6,
            radius_m: self.radius_m as f64,
        }
    }
}

/// The snapping grid: square cells `cell_m` metres along a meridian, the same step in
/// degrees of longitude. Off (`cell_m` 0): every query is its own key, as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grid {
    /// Cell size in metres; 0 turns snapping off.
    cell_m: u32,
}

impl Grid {
    /// A grid of `cell_m`-metre cells; 0 turns snapping off.
    pub fn new(cell_m: u32) -> Grid {
        Grid { cell_m }
    }

    /// The upstream key for `query`, and the client's own disc when the key is for a
    /// larger one (its results must then be filtered by true distance);
    /// `None` when the query holds a non-finite number.
    ///
    /// The centre moves to the nearest grid point: at most half a cell north-south
    /// and half a cell (times the cosine of the latitude) east-west, so less than one
    /// cell in all. The radius grows to a whole number of cells plus one more, so the
    /// snapped disc holds the whole client disc, up to Google's 50 km maximum.
    pub fn key(&self, query: NearbyQuery) -> Option<(QueryKey, Option<Disc>)> {
        if self.cell_m == 0 {
            return Some((QueryKey::from_query(query)?, None));
        }
        let NearbyQuery { lat, lon, radius_m } = query;
        if !(lat.is_finite() && lon.is_finite() && radius_m.is_finite()) {
            return None;
        }
        let cell = f64::from(self.cell_m);
        let step = cell / METRES_PER_DEGREE;
        // Snapped from whole cell numbers, so every query in a cell gets the same bits.
        let snapped_lat = ((lat / step).round() * step).clamp(-90.0, 90.0);
        let snapped_lon = wrap_lon((lon / step).round() * step);
        let cells = (radius_m.max(0.0) / cell).ceil() + 1.0;
        let snapped_radius = (cells * cell).min(MAX_RADIUS_M.max(radius_m));
        let key = QueryKey::from_query(NearbyQuery {
            lat: snapped_lat,
            lon: snapped_lon,
            radius_m: snapped_radius,
        })?;
        let disc = Disc { lat, lon, radius_m };
        Some((key, Some(disc)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::places::geo::distance_m;
    use proptest::prelude::*;

    fn query(lat: f64, lon: f64, radius_m: f64) -> NearbyQuery {
        NearbyQuery { lat, lon, radius_m }
    }

    fn key(lat: f64, lon: f64, radius_m: f64) -> QueryKey {
        QueryKey::from_query(query(lat, lon, radius_m)).unwrap()
    }

    #[test]
    fn radius_is_rounded_to_whole_metres_at_least_one() {
        assert_eq!(key(0.0, 0.0, 1499.5).radius_m, 1500);
        assert_eq!(key(0.0, 0.0, 1499.49).radius_m, 1499);
        assert_eq!(key(0.0, 0.0, 0.2).radius_m, 1);
        assert_eq!(key(0.0, 0.0, 0.0).radius_m, 1);
        assert_eq!(key(0.0, 0.0, -7.0).radius_m, 1);
    }

    #[test]
    fn coordinates_round_to_six_decimals() {
        assert_eq!(key(1.0000004, 2.0, 1.0), key(1.0, 2.0000001, 1.0));
        assert_ne!(key(1.0000006, 2.0, 1.0), key(1.0, 2.0, 1.0));
        assert_eq!(key(1.0, 2.0, 10.4), key(1.0, 2.0, 9.6));
        for bad in [f64::NAN, f64::INFINITY] {
            assert!(QueryKey::from_query(query(bad, 0.0, 1.0)).is_none());
            assert!(QueryKey::from_query(query(0.0, 0.0, bad)).is_none());
            assert!(Grid::new(100).key(query(bad, 0.0, 1.0)).is_none());
        }
    }

    #[test]
    fn without_a_grid_the_key_is_the_query_and_nothing_is_filtered() {
        let q = query(34.068930, -118.445127, 5000.0);
        assert_eq!(
            Grid::new(0).key(q),
            Some((key(34.068930, -118.445127, 5000.0), None))
        );
    }

    #[test]
    fn near_queries_in_one_cell_share_a_key_and_keep_their_own_disc() {
        let grid = Grid::new(1000);
        let a = query(34.0661, -118.4501, 5000.0);
        let b = query(34.0664, -118.4489, 4200.0);
        let (ka, da) = grid.key(a).unwrap();
        let (kb, db) = grid.key(b).unwrap();
        assert_eq!(ka, kb);
        assert_eq!(ka.radius_m, 6000);
        assert_eq!(da.unwrap().radius_m, 5000.0);
        assert_eq!(db.unwrap().lat, 34.0664);
        // A radius of whole cells still gets one cell of margin.
        assert_eq!(grid.key(query(0.0, 0.0, 3000.0)).unwrap().0.radius_m, 4000);
        // Never more than Google allows, never less than asked.
        assert_eq!(
            grid.key(query(0.0, 0.0, 50_000.0)).unwrap().0.radius_m,
            50_000
        );
    }

    #[test]
    fn snapping_at_the_poles_and_antimeridian_stays_in_range() {
        let grid = Grid::new(5000);
        for (lat, lon) in [(90.0, 0.0), (-90.0, 180.0), (89.99, -180.0), (0.0, 179.99)] {
            let (k, _) = grid.key(query(lat, lon, 100.0)).unwrap();
            assert!((-90_000_000..=90_000_000).contains(&k.lat_e6), "{k:?}");
            assert!((-180_000_000..=180_000_000).contains(&k.lng_e6), "{k:?}");
        }
    }

    proptest! {
        /// The snapped disc covers the client's disc: its centre is closer than the
        /// margin of one cell the radius got.
        #[test]
        fn the_snapped_disc_holds_the_client_disc(
            lat in -90.0..=90.0f64,
            lon in -180.0..=180.0f64,
            radius in 1.0..=45_000.0f64,
            cell in 1u32..=5_000,
        ) {
            let (k, disc) = Grid::new(cell).key(query(lat, lon, radius)).unwrap();
            prop_assert!(disc.is_some());
            let s = k.query();
            let centre_moved = distance_m(lat, lon, s.lat, s.lon);
            prop_assert!(centre_moved <= f64::from(cell), "moved {} m", centre_moved);
            prop_assert!(s.radius_m >= radius);
            if s.radius_m < MAX_RADIUS_M {
                prop_assert!(centre_moved + radius <= s.radius_m + 1.0);
            }
        }
    }
}
