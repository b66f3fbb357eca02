import torch

from sslandmarks.coords import heatmap_to_image, image_to_heatmap, inside_image, pixel_grid, pixel_to_normalized_matrix


def test_pixel_centres_are_integers():
    xs, ys = pixel_grid(2, 3)
    assert xs.tolist() == [0.0, 1.0, 2.0] and ys.tolist() == [0.0, 1.0]


def test_heatmap_stride_mapping_literals():
    # stride 4: heatmap pixel 0 covers image pixels 0..3, whose centre is 1.5
    assert heatmap_to_image(torch.tensor([0.0, 0.0]), 4).tolist() == [1.5, 1.5]
    assert heatmap_to_image(torch.tensor([2.0, -0.5]), 4).tolist() == [9.5, -0.5]
    p = torch.tensor([[3.25, 7.0]])
    assert torch.allclose(image_to_heatmap(heatmap_to_image(p, 2), 2), p)


def test_normalized_edges():
    n = pixel_to_normalized_matrix(10, 20)
    left_edge = n @ torch.tensor([-0.5, -0.5, 1.0])
    right_edge = n @ torch.tensor([19.5, 9.5, 1.0])
    assert torch.allclose(left_edge[:2], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(right_edge[:2], torch.tensor([1.0, 1.0]))


def test_inside_image():
    pts = torch.tensor([[-0.5, 0.0], [-0.6, 0.0], [9.5, 4.5], [9.6, 1.0]])
    assert inside_image(pts, 5, 10).tolist() == [True, False, True, False]
