/* shapes 1.0: draws one layer with libshapes, whose hexagon has no fill. */
#include <stdio.h>

#include "shapes.h"

static int shapes_v10_count_polygons(const struct shapes_v10_shape *shape, void *data)
{
    (void)data;
    return shapes_v10_is_polygon(shape->kind);
}

__attribute__((noinline)) static size_t shapes_v10_draw(struct shapes_v10_canvas *canvas)
{
    struct shapes_v10_swatch sky = {210, 37, 80, 255};
    struct shapes_v10_point corner = shapes_v10_point_add(canvas->layers[0].shapes[0].bounds.origin,
                                                          (struct shapes_v10_point){1, 1});
    canvas->background = shapes_v10_mix(canvas->background, sky);
    printf("shapes 1.0 draws %zu polygons from (%.0f, %.0f)\n",
           shapes_v10_visit(canvas, shapes_v10_count_polygons, NULL), corner.x, corner.y);
    fflush(stdout);
    return shapes_v10_render(canvas); /* CALL HERE */
}

int main(void)
{
    struct shapes_v10_shape drawing[2] = {
        {.kind = SHAPES_V10_KIND_CIRCLE, .id = 1, .bounds = {{0, 0}, {4, 4}},
         .transform = {1, 0, 0, 1, 0, 0}, .stroke = {.width = 1, .swatch = {30, 90, 50, 255}}},
        {.kind = SHAPES_V10_KIND_HEXAGON, .id = 2, .bounds = {{2, 2}, {6, 6}},
         .transform = {1, 0, 0, 1, 0, 0}, .stroke = {.width = 2, .swatch = {120, 60, 40, 200}}},
    };
    struct shapes_v10_layer layer = {"sketch", SHAPES_V10_BLEND_NORMAL, 1.0, 2, drawing};
    struct shapes_v10_canvas canvas = {{640, 480}, {0, 0, 100, 255}, 1, &layer};
    struct shapes_v10_point moved = shapes_v10_apply(&drawing[1].transform, drawing[1].bounds.origin);
    return (int)shapes_v10_draw(&canvas) + (int)moved.x;
}
