import torch

from sslandmarks.data.splits import IndexStream, labelled_subset
from sslandmarks.data.synthetic import BLOCK_FIGURES, NUM_BLOCK_CLASSES, make_blocks, make_shapes


def test_blocks_deterministic_and_well_formed():
    a, b = make_blocks(40, seed=3, split="train"), make_blocks(40, seed=3, split="train")
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)
    c = make_blocks(40, seed=3, split="test")
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (40, 1, 60, 60) and a.images.dtype == torch.uint8
    assert a.landmarks.shape == (40, 5, 2)
    assert (a.landmarks >= 0).all() and (a.landmarks <= 59).all()
    assert a.attributes["class"].min() >= 0 and a.attributes["class"].max() < 15


def test_blocks_square_landmarks_sit_on_white_blocks():
    d = make_blocks(50, seed=0)
    xy = d.landmarks[:, 1:].round().long()  # square centres are bright
    vals = d.images[torch.arange(50)[:, None], 0, xy[..., 1], xy[..., 0]]
    assert (vals > 200).float().mean() > 0.98
    # consecutive landmarks are one cell (5-8 px, shrunk to fit) apart
    steps = (d.landmarks[:, 2:] - d.landmarks[:, 1:-1]).norm(dim=-1)
    assert steps.min() > 3.0 and steps.max() < 8.1


def test_blocks_fifteen_distinct_figures_up_to_rotation():
    assert NUM_BLOCK_CLASSES == 15 and len(BLOCK_FIGURES) == 15

    def canon(chain):
        forms = []
        for k in range(4):
            pts = chain
            for _ in range(k):
                pts = [(-y, x) for x, y in pts]
            x0, y0 = pts[0]
            forms.append(tuple((x - x0, y - y0) for x, y in pts))
        return min(forms)

    assert len({canon(c) for c in BLOCK_FIGURES}) == 15
    assert len({canon(c[:5]) for c in BLOCK_FIGURES}) == 15  # the class is a function of the 5 landmarks


def test_shapes_labels_follow_the_centres():
    d = make_shapes(200, seed=1)
    corner = torch.tensor([-0.5, -0.5])
    dist = (d.landmarks - corner).norm(dim=-1)  # (N, 2): triangle, square
    assert torch.equal(d.attributes["nearer"], (dist[:, 1] < dist[:, 0]).long())
    assert 0.3 < d.attributes["nearer"].float().mean() < 0.7
    # each centre is bright (inside its shape)
    xy = d.landmarks.round().long()
    vals = d.images[torch.arange(200)[:, None], 0, xy[..., 1], xy[..., 0]]
    assert (vals > 200).all()


def test_labelled_subset_class_balanced_and_deterministic():
    classes = torch.arange(1500) % 15
    m = labelled_subset(classes, 1500, 5.0, seed=0)
    assert m.sum() == 75
    assert torch.bincount(classes[m], minlength=15).tolist() == [5] * 15
    assert torch.equal(m, labelled_subset(classes, 1500, 5.0, seed=0))
    assert not torch.equal(m, labelled_subset(classes, 1500, 5.0, seed=1))
    assert labelled_subset(classes, 1500, 0.01, seed=0).sum() == 1
    assert labelled_subset(None, 10, 100.0, seed=0).all()


def test_index_stream_covers_each_pass_and_is_a_function_of_step():
    s = IndexStream(torch.arange(10, 20), batch=4, seed=0)
    first_pass = torch.cat([s.batch_at(0), s.batch_at(1), s.batch_at(2)[:2]])
    assert sorted(first_pass.tolist()) == list(range(10, 20))
    assert torch.equal(s.batch_at(7), IndexStream(torch.arange(10, 20), 4, 0).batch_at(7))
    small = IndexStream(torch.arange(3), batch=8, seed=0)  # fewer images than the batch: repeats
    assert len(small.batch_at(0)) == 8
    assert len(IndexStream(torch.arange(0), 4, 0).batch_at(0)) == 0


def test_mirror_augmentation_renumbers_landmarks_by_the_flip_permutation():
    """A mirrored face's left eye corner is its right one: landmark k lands on the slot flip[k], at the
    mirrored position, and the pixels under it move with it."""
    from sslandmarks.data.augment import augment
    from sslandmarks.data.dataset import LandmarkData
    from sslandmarks.geometry import AffineRanges, sample_affine

    images = torch.zeros(2, 1, 20, 20, dtype=torch.uint8)
    images[:, 0, 5, 3] = 255  # the bright pixel under landmark 0
    lms = torch.tensor([[[3.0, 5.0], [15.0, 5.0], [9.0, 12.0]]]).repeat(2, 1, 1)
    t, flipped = sample_affine(2, AffineRanges(flip=1.0), (20, 20))
    flipped[1] = False
    t[1] = torch.eye(3)
    out = augment(LandmarkData(images, lms), t, flipped, flip_perm=(1, 0, 2))
    assert torch.allclose(out.landmarks[0], torch.tensor([[4.0, 5.0], [16.0, 5.0], [10.0, 12.0]]), atol=1e-4)
    assert torch.equal(out.landmarks[1], lms[1])  # unflipped sample untouched
    assert out.images[0, 0, 5, 16] == 255  # old landmark 0's pixel, now under the renumbered landmark 1
