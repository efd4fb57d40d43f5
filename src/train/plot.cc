#include "train/plot.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <map>

#include "core/error.h"
#include "io/file.h"

namespace swiftlet {

namespace {

// 5x7 bitmap glyphs: 7 rows of 5 columns, '#' = ink.
const std::map<char, std::array<const char*, 7>>& font() {
  static const std::map<char, std::array<const char*, 7>> f = {
      {'0', {" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "}},
      {'1', {"  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'2', {" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"}},
      {'3', {"#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "}},
      {'4', {"   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "}},
      {'5', {"#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "}},
      {'6', {"  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "}},
      {'7', {"#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "}},
      {'8', {" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "}},
      {'9', {" ### ", "#   #", "#   #", " ####", "    #", "   # ", " ##  "}},
      {'.', {"     ", "     ", "     ", "     ", "     ", " ##  ", " ##  "}},
      {'-', {"     ", "     ", "     ", "#####", "     ", "     ", "     "}},
      {'+', {"     ", "  #  ", "  #  ", "#####", "  #  ", "  #  ", "     "}},
      {'_', {"     ", "     ", "     ", "     ", "     ", "     ", "#####"}},
      {'/', {"     ", "    #", "   # ", "  #  ", " #   ", "#    ", "     "}},
      {':', {"     ", " ##  ", " ##  ", "     ", " ##  ", " ##  ", "     "}},
      {' ', {"     ", "     ", "     ", "     ", "     ", "     ", "     "}},
      {'a', {"     ", "     ", " ### ", "    #", " ####", "#   #", " ####"}},
      {'b', {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#### "}},
      {'c', {"     ", "     ", " ### ", "#    ", "#    ", "#   #", " ### "}},
      {'d', {"    #", "    #", " ## #", "#  ##", "#   #", "#   #", " ####"}},
      {'e', {"     ", "     ", " ### ", "#   #", "#####", "#    ", " ### "}},
      {'f', {"  ## ", " #  #", " #   ", "###  ", " #   ", " #   ", " #   "}},
      {'g', {"     ", " ####", "#   #", "#   #", " ####", "    #", " ### "}},
      {'h', {"#    ", "#    ", "# ## ", "##  #", "#   #", "#   #", "#   #"}},
      {'i', {"  #  ", "     ", " ##  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'j', {"   # ", "     ", "  ## ", "   # ", "   # ", "#  # ", " ##  "}},
      {'k', {"#    ", "#    ", "#  # ", "# #  ", "##   ", "# #  ", "#  # "}},
      {'l', {" ##  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "}},
      {'m', {"     ", "     ", "## # ", "# # #", "# # #", "#   #", "#   #"}},
      {'n', {"     ", "     ", "# ## ", "##  #", "#   #", "#   #", "#   #"}},
      {'o', {"     ", "     ", " ### ", "#   #", "#   #", "#   #", " ### "}},
      {'p', {"     ", "     ", "#### ", "#   #", "#### ", "#    ", "#    "}},
      {'q', {"     ", "     ", " ## #", "#  ##", " ####", "    #", "    #"}},
      {'r', {"     ", "     ", "# ## ", "##  #", "#    ", "#    ", "#    "}},
      {'s', {"     ", "     ", " ### ", "#    ", " ### ", "    #", "#### "}},
      {'t', {" #   ", " #   ", "###  ", " #   ", " #   ", " #  #", "  ## "}},
      {'u', {"     ", "     ", "#   #", "#   #", "#   #", "#  ##", " ## #"}},
      {'v', {"     ", "     ", "#   #", "#   #", "#   #", " # # ", "  #  "}},
      {'w', {"     ", "     ", "#   #", "#   #", "# # #", "# # #", " # # "}},
      {'x', {"     ", "     ", "#   #", " # # ", "  #  ", " # # ", "#   #"}},
      {'y', {"     ", "     ", "#   #", "#   #", " ####", "    #", " ### "}},
      {'z', {"     ", "     ", "#####", "   # ", "  #  ", " #   ", "#####"}},
  };
  return f;
}

struct Canvas {
  int w, h;
  std::vector<uint8_t> px;
  Canvas(int w_, int h_) : w(w_), h(h_), px(size_t(w_ * h_ * 3), 255) {}
  void set(int x, int y, uint8_t r, uint8_t g, uint8_t b) {
    if (x < 0 || y < 0 || x >= w || y >= h) return;
    uint8_t* p = &px[size_t((y * w + x) * 3)];
    p[0] = r, p[1] = g, p[2] = b;
  }
  void line(double x0, double y0, double x1, double y1, uint8_t r, uint8_t g, uint8_t b) {
    const int n = int(std::max(std::fabs(x1 - x0), std::fabs(y1 - y0))) + 1;
    for (int i = 0; i <= n; ++i) {
      const double t = double(i) / n;
      set(int(std::lround(x0 + (x1 - x0) * t)), int(std::lround(y0 + (y1 - y0) * t)), r, g, b);
    }
  }
  void text(int x, int y, const std::string& s, int scale = 1) {
    for (char ch : s) {
      char c = char(std::tolower(static_cast<unsigned char>(ch)));
      auto it = font().find(c);
      if (it != font().end())
        for (int row = 0; row < 7; ++row)
          for (int col = 0; col < 5; ++col)
            if (it->second[size_t(row)][col] == '#')
              for (int dy = 0; dy < scale; ++dy)
                for (int dx = 0; dx < scale; ++dx) set(x + col * scale + dx, y + row * scale + dy, 0, 0, 0);
      x += 6 * scale;
    }
  }
};

void put_u32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(char((v >> (8 * i)) & 0xff));
}

void chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, uint32_t(data.size()));
  std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size()))));
}

std::string label(double v) { return fmt::format("{:.4g}", v); }

}  // namespace

std::string encode_png(int width, int height, const std::vector<uint8_t>& rgb) {
  std::string raw;
  for (int y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    raw.append(reinterpret_cast<const char*>(&rgb[size_t(y * width * 3)]), size_t(width * 3));
  }
  uLongf zlen = compressBound(uLong(raw.size()));
  std::string z(zlen, '\0');
  if (compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
                uLong(raw.size()), 6) != Z_OK)
    throw Error("PNG compression failed");
  z.resize(zlen);
  std::string png = "\x89PNG\r\n\x1a\n";
  std::string ihdr;
  put_u32(ihdr, uint32_t(width));
  put_u32(ihdr, uint32_t(height));
  ihdr += std::string("\x08\x02\x00\x00\x00", 5);  // 8-bit RGB
  chunk(png, "IHDR", ihdr);
  chunk(png, "IDAT", z);
  chunk(png, "IEND", "");
  return png;
}

void write_line_plot_png(const std::string& path, const std::string& title,
                         const std::vector<std::pair<double, double>>& pts) {
  const int W = 640, H = 400, left = 70, right = 20, top = 40, bottom = 40;
  Canvas c(W, H);
  double x0 = pts.front().first, x1 = pts.back().first, y0 = pts.front().second, y1 = y0;
  for (auto& [x, y] : pts) {
    x0 = std::min(x0, x), x1 = std::max(x1, x);
    if (std::isfinite(y)) y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + std::max(1e-12, std::fabs(y0) * 0.1 + 1e-12);
  auto X = [&](double x) { return left + (x - x0) / (x1 - x0) * (W - left - right); };
  auto Y = [&](double y) { return H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom); };
  c.text(left, 12, title, 2);
  c.line(left, top, left, H - bottom, 0, 0, 0);
  c.line(left, H - bottom, W - right, H - bottom, 0, 0, 0);
  c.text(4, top - 3, label(y1));
  c.text(4, H - bottom - 4, label(y0));
  c.text(left, H - bottom + 8, label(x0));
  const std::string xr = label(x1);
  c.text(W - right - int(xr.size()) * 6, H - bottom + 8, xr);
  c.text(W / 2 - 12, H - bottom + 22, "step");
  for (size_t i = 1; i < pts.size(); ++i)
    c.line(X(pts[i - 1].first), Y(pts[i - 1].second), X(pts[i].first), Y(pts[i].second), 160, 190, 230);
  // Exponential moving average (TensorBoard-style smoothing 0.9), drawn darker on top.
  double ema = pts.front().second;
  double px = X(pts.front().first), py = Y(ema);
  for (size_t i = 0; i < pts.size(); ++i) {
    ema = i == 0 ? pts[i].second : 0.9 * ema + 0.1 * pts[i].second;
    double nx = X(pts[i].first), ny = Y(ema);
    if (i) c.line(px, py, nx, ny, 20, 80, 200);
    px = nx, py = ny;
  }
  if (pts.size() == 1) c.line(X(pts[0].first) - 2, Y(pts[0].second), X(pts[0].first) + 2, Y(pts[0].second), 20, 80, 200);
  const std::string png = encode_png(W, H, c.px);
  io::write_file_atomic(path, png);
}

}  // namespace swiftlet
