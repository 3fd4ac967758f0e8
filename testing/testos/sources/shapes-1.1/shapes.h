/* shapes 1.1: the types and helpers libshapes and the shapes program share.
 *
 * Both ELF files of the source package include all of it, so their DWARF repeats
 * every type below: dwz moves those into the package's .dwz multifile. The names
 * carry the version so that each version's multifile differs (and its build-id).
 */
#ifndef SHAPES_H
#define SHAPES_H

#include <stddef.h>
#include <stdint.h>

enum shapes_v11_kind {
    SHAPES_V11_KIND_POINT,
    SHAPES_V11_KIND_LINE,
    SHAPES_V11_KIND_TRIANGLE,
    SHAPES_V11_KIND_RECTANGLE,
    SHAPES_V11_KIND_PENTAGON,
    SHAPES_V11_KIND_HEXAGON,
    SHAPES_V11_KIND_CIRCLE,
    SHAPES_V11_KIND_ELLIPSE,
    SHAPES_V11_KIND_STAR,
    SHAPES_V11_KIND_PATH,
};

enum shapes_v11_line_cap { SHAPES_V11_CAP_BUTT, SHAPES_V11_CAP_ROUND, SHAPES_V11_CAP_SQUARE };
enum shapes_v11_line_join { SHAPES_V11_JOIN_MITER, SHAPES_V11_JOIN_ROUND, SHAPES_V11_JOIN_BEVEL };
enum shapes_v11_fill_rule { SHAPES_V11_FILL_NONZERO, SHAPES_V11_FILL_EVENODD };
enum shapes_v11_blend {
    SHAPES_V11_BLEND_NORMAL,
    SHAPES_V11_BLEND_MULTIPLY,
    SHAPES_V11_BLEND_SCREEN,
    SHAPES_V11_BLEND_OVERLAY,
    SHAPES_V11_BLEND_DARKEN,
    SHAPES_V11_BLEND_LIGHTEN,
};

/* A colour as people pick it; the members' names are unique to this header, so a
 * test can tell where gdb read them from. */
struct shapes_v11_swatch {
    uint16_t swatch_hue;
    uint8_t swatch_chroma;
    uint8_t swatch_tone;
    uint8_t swatch_alpha;
};

struct shapes_v11_point {
    double x;
    double y;
};

struct shapes_v11_size {
    double width;
    double height;
};

struct shapes_v11_rect {
    struct shapes_v11_point origin;
    struct shapes_v11_size size;
};

struct shapes_v11_transform {
    double xx, xy, yx, yy;
    double x0, y0;
};

struct shapes_v11_stroke {
    double width;
    enum shapes_v11_line_cap cap;
    enum shapes_v11_line_join join;
    double miter_limit;
    double dashes[4];
    struct shapes_v11_swatch swatch;
};

struct shapes_v11_gradient_stop {
    double offset;
    struct shapes_v11_swatch swatch;
};

struct shapes_v11_gradient {
    struct shapes_v11_point from;
    struct shapes_v11_point to;
    unsigned stop_count;
    struct shapes_v11_gradient_stop stops[8];
};

struct shapes_v11_fill {
    enum shapes_v11_fill_rule rule;
    int uses_gradient;
    union {
        struct shapes_v11_swatch swatch;
        struct shapes_v11_gradient gradient;
    } paint;
};

struct shapes_v11_shape {
    enum shapes_v11_kind kind;
    unsigned id;
    struct shapes_v11_rect bounds;
    struct shapes_v11_transform transform;
    struct shapes_v11_stroke stroke;
    struct shapes_v11_fill *fill; /* NULL: not filled */
    size_t point_count;
    struct shapes_v11_point *points;
};

struct shapes_v11_layer {
    const char *name;
    enum shapes_v11_blend blend;
    double opacity;
    size_t shape_count;
    struct shapes_v11_shape *shapes;
};

struct shapes_v11_canvas {
    struct shapes_v11_size size;
    struct shapes_v11_swatch background;
    size_t layer_count;
    struct shapes_v11_layer *layers;
};

typedef int (*shapes_v11_visitor)(const struct shapes_v11_shape *shape, void *data);

static inline struct shapes_v11_point shapes_v11_point_add(struct shapes_v11_point a,
                                                           struct shapes_v11_point b)
{
    struct shapes_v11_point sum = {a.x + b.x, a.y + b.y};
    return sum;
}

static inline double shapes_v11_rect_area(const struct shapes_v11_rect *rect)
{
    return rect->size.width * rect->size.height;
}

static inline struct shapes_v11_point shapes_v11_apply(const struct shapes_v11_transform *t,
                                                       struct shapes_v11_point p)
{
    struct shapes_v11_point out = {t->xx * p.x + t->xy * p.y + t->x0,
                                   t->yx * p.x + t->yy * p.y + t->y0};
    return out;
}

static inline struct shapes_v11_swatch shapes_v11_mix(struct shapes_v11_swatch a,
                                                      struct shapes_v11_swatch b)
{
    struct shapes_v11_swatch mixed = {
        (uint16_t)((a.swatch_hue + b.swatch_hue) / 2),
        (uint8_t)((a.swatch_chroma + b.swatch_chroma) / 2),
        (uint8_t)((a.swatch_tone + b.swatch_tone) / 2),
        (uint8_t)((a.swatch_alpha + b.swatch_alpha) / 2),
    };
    return mixed;
}

static inline int shapes_v11_is_polygon(enum shapes_v11_kind kind)
{
    return kind >= SHAPES_V11_KIND_TRIANGLE && kind <= SHAPES_V11_KIND_HEXAGON;
}

/* libshapes: paints every shape of every layer; returns how many it painted. */
size_t shapes_v11_render(const struct shapes_v11_canvas *canvas);
size_t shapes_v11_visit(const struct shapes_v11_canvas *canvas, shapes_v11_visitor visitor,
                        void *data);

#endif
