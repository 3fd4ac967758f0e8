/* libshapes 1.1: paints a canvas; a polygon without a fill crashes it. */
#include <stdio.h>

#include "shapes.h"

__attribute__((noinline)) static double shapes_v11_paint_shape(const struct shapes_v11_shape *shape,
                                                               struct shapes_v11_swatch background)
{
    enum shapes_v11_kind paint_kind = shape->kind;
    struct shapes_v11_swatch paint_swatch = shapes_v11_mix(shape->stroke.swatch, background);
    double covered = shapes_v11_rect_area(&shape->bounds);
    if (shape->stroke.width <= 0)
        return 0; /* 1.1 skips shapes without a stroke */
    if (shapes_v11_is_polygon(paint_kind))
        paint_swatch = shapes_v11_mix(paint_swatch, shape->fill->paint.swatch); /* CRASH HERE */
    return covered * paint_swatch.swatch_alpha / 255.0;
}

size_t shapes_v11_visit(const struct shapes_v11_canvas *canvas, shapes_v11_visitor visitor,
                        void *data)
{
    size_t visited = 0;
    for (size_t l = 0; l < canvas->layer_count; l++)
        for (size_t s = 0; s < canvas->layers[l].shape_count; s++)
            visited += visitor(&canvas->layers[l].shapes[s], data) != 0;
    return visited;
}

size_t shapes_v11_render(const struct shapes_v11_canvas *canvas)
{
    size_t painted = 0;
    double coverage = 0;
    for (size_t l = 0; l < canvas->layer_count; l++) {
        const struct shapes_v11_layer *layer = &canvas->layers[l];
        for (size_t s = 0; s < layer->shape_count; s++) {
            coverage += shapes_v11_paint_shape(&layer->shapes[s], canvas->background);
            painted++;
        }
    }
    printf("libshapes 1.1 painted %zu shapes, %.1f covered\n", painted, coverage);
    return painted;
}
