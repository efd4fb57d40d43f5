#pragma once
// Minimal PNG line plots for a run's images/ folder (no plotting library on the machine): a
// title, axes with min/max labels, the raw series and its smoothed line (as ms-swift's plots).
#include <string>
#include <utility>
#include <vector>

namespace swiftlet {

void write_line_plot_png(const std::string& path, const std::string& title,
                         const std::vector<std::pair<double, double>>& points);

// Encodes an RGB image (row-major, 3 bytes a pixel) as PNG bytes; exposed for tests.
std::string encode_png(int width, int height, const std::vector<uint8_t>& rgb);

}  // namespace swiftlet
