/* The rollout area's map: buildings as points coloured by stage, the area's outline, a click through to a building.
   Leaflet comes from our own static files; tiles only when the operator configured a tile server (MAP_TILE_URL),
   otherwise the points are drawn on a plain background and the browser asks no other host. */
(function () {
  "use strict";
  var box = document.getElementById("area-map");
  if (!box || !window.L) { return; }
  var colours = JSON.parse(box.dataset.colours || "{}");
  var map = L.map(box, { attributionControl: Boolean(box.dataset.tiles), zoomSnap: 0.25 });
  if (box.dataset.tiles) {
    L.tileLayer(box.dataset.tiles, { attribution: box.dataset.attribution || "", maxZoom: 19 }).addTo(map);
  }
  fetch(box.dataset.geojson, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) { return response.json(); })
    .then(function (data) {
      var bounds = L.latLngBounds([]);
      if (data.outline) {
        var outline = L.geoJSON(data.outline, { style: { color: "#495057", weight: 2, dashArray: "6 4", fillOpacity: 0.04 } });
        outline.addTo(map);
        bounds.extend(outline.getBounds());
      }
      var points = L.geoJSON({ type: "FeatureCollection", features: data.features }, {
        pointToLayer: function (feature, latlng) {
          return L.circleMarker(latlng, { radius: 7, color: "#212529", weight: 1, fillOpacity: 0.9,
                                          fillColor: colours[feature.properties.stage] || "#adb5bd" });
        },
        onEachFeature: function (feature, layer) {
          layer.bindTooltip(feature.properties.label);
          layer.on("click", function () { window.location.href = feature.properties.url; });
        }
      }).addTo(map);
      if (data.features.length) { bounds.extend(points.getBounds()); }
      if (bounds.isValid()) { map.fitBounds(bounds, { padding: [24, 24], maxZoom: 18 }); } else { map.setView([51.28, 7.04], 14); }
      var list = document.getElementById("area-unlocated");
      if (list && data.unlocated.length) {
        var heading = document.createElement("p");
        heading.textContent = box.dataset.unlocatedLabel || "";
        list.appendChild(heading);
        var items = document.createElement("ul");
        data.unlocated.forEach(function (building) {
          var item = document.createElement("li");
          var link = document.createElement("a");
          link.href = building.url;
          link.textContent = building.label;
          item.appendChild(link);
          items.appendChild(item);
        });
        list.appendChild(items);
      }
      box.dataset.ready = "true";
    });
})();
