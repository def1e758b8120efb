#pragma once

#include <string_view>

// The dashboard's static files (ui/src/ and the charting library from ui/node_modules/uplot),
// embedded at build time: cmake/EmbedUi.cmake generates the definition of findUiAsset into the
// build directory (ui_assets.cc), so the controller serves them without touching the disk and
// without any network at run time.
namespace ballast::controller {

struct UiAsset {
  std::string_view content_type;
  std::string_view body;
};

// path relative to /ui/, e.g. "index.html", "login.html", "app.js", "style.css",
// "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"; nullptr if none
const UiAsset* findUiAsset(std::string_view path);

}  // namespace ballast::controller
