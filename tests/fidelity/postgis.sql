-- The PostGIS database of the fidelity tier: extensions whose configuration tables pg_dump dumps only in part
-- (spatial_ref_sys: the rows users added; topology.topology and topology.layer: every row), a topology with a few
-- edges and a TopoGeometry column, a raster with PostGIS's own constraints, and rows in the users' own SRID.
-- Loaded with `psql -X -v ON_ERROR_STOP=1 -v have_raster=true|false -f postgis.sql` as the superuser.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE DATABASE gis TEMPLATE template0;
COMMENT ON DATABASE gis IS 'PostGIS, topology and raster';
\connect gis
SET client_min_messages = warning;

CREATE EXTENSION postgis;
CREATE EXTENSION postgis_topology;
\if :have_raster
CREATE EXTENSION postgis_raster;
\endif

-- Spatial reference systems of the users' own (pg_dump dumps these rows of the extension's table, and only these).
INSERT INTO public.spatial_ref_sys (srid, auth_name, auth_srid, srtext, proj4text) VALUES
    (990001, 'pgdr', 990001,
     'GEOGCS["pgdr test ''lat/lon''",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
     'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]',
     '+proj=longlat +datum=WGS84 +no_defs'),
    (990002, 'pgdr', 990002, 'LOCAL_CS["pgdr local grid"]', '');

CREATE TABLE public.places (
    id int PRIMARY KEY,
    name text NOT NULL,
    geom geometry(Point, 4326) NOT NULL,
    area geography(Polygon, 4326),
    local geometry(Point, 990001)
);
INSERT INTO public.places
SELECT g, 'place ' || g, ST_SetSRID(ST_MakePoint(g * 0.01, 45 + g * 0.01), 4326),
       ST_GeogFromText(format('SRID=4326;POLYGON((%1$s 45, %2$s 45, %2$s 46, %1$s 46, %1$s 45))',
                              g * 0.01, g * 0.01 + 0.5)),
       ST_SetSRID(ST_MakePoint(g, -g), 990001)
FROM generate_series(1, 200) AS g;
CREATE INDEX places_geom ON public.places USING gist (geom);
CREATE INDEX places_area ON public.places USING gist (area);
COMMENT ON TABLE public.places IS 'points, areas and a point in SRID 990001';

-- A topology with a few edges, and a TopoGeometry column built on it.
SELECT topology.CreateTopology('city_topo', 4326) > 0 AS created;
SELECT count(*) AS edges FROM (
    SELECT topology.TopoGeo_AddLineString('city_topo', ST_GeomFromText(line, 4326))
    FROM unnest(ARRAY['LINESTRING(0 0, 1 0)', 'LINESTRING(1 0, 1 1)', 'LINESTRING(1 1, 0 1)',
                      'LINESTRING(0 1, 0 0)', 'LINESTRING(0 0, 1 1)', 'LINESTRING(1 0, 2 0, 2 1, 1 1)']) AS line
) AS added;
CREATE TABLE public.roads (id int PRIMARY KEY, name text NOT NULL);
SELECT topology.AddTopoGeometryColumn('city_topo', 'public', 'roads', 'topo', 'LINE') > 0 AS layer;
INSERT INTO public.roads (id, name, topo) VALUES
    (1, 'main street', topology.toTopoGeom(ST_GeomFromText('LINESTRING(0 0, 1 0, 1 1)', 4326), 'city_topo', 1)),
    (2, 'ring road', topology.toTopoGeom(ST_GeomFromText('LINESTRING(1 0, 2 0, 2 1, 1 1)', 4326), 'city_topo', 1));

\if :have_raster
-- A raster table with PostGIS's constraints on it (their functions run again while the rows are restored).
CREATE TABLE public.elevation (rid int PRIMARY KEY, rast raster NOT NULL);
INSERT INTO public.elevation
SELECT g, ST_AddBand(ST_MakeEmptyRaster(8, 8, (g - 1) * 8, 0, 1, -1, 0, 0, 4326), '8BUI'::text, g * 10, 0)
FROM generate_series(1, 4) AS g;
SELECT AddRasterConstraints('public'::name, 'elevation'::name, 'rast'::name) AS constrained;
\endif

ANALYZE;
