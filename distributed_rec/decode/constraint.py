"""Index of valid semantic IDs: which items (and so which codes) agree with a partial ID.

A beam has filled some positions of the target's M-tuple (any subset, since the order is
adaptive). The items consistent with it are those whose codes equal the beam's at every filled
position. For a pair of position sets F (filled) within G (target), the index keeps the items
sorted by a mixed-radix key over F, then over G: a beam's consistent items are one contiguous
range found by binary search, and inside it the items with equal codes on G are contiguous runs.
One item per run is one distinct completion of the beam on G -- the candidates of a joint
expansion (G = filled + chosen positions) or the valid codes of one position (G = filled + m),
without visiting every consistent item.

Legend: R beams, N items, M positions, K codes per position, P (beam, item) pairs.
"""

from __future__ import annotations

import torch

from distributed_rec.semantic_ids.id_table import SemanticIdTable

UNFILLED = -1
_MAX_KEY = 2**62


def _segments(count_G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For segments of the given lengths laid end to end: each element's segment and offset."""
    start_G = torch.cumsum(count_G, 0) - count_G
    total = int(count_G.sum())
    marks_P = torch.zeros(total + 1, dtype=torch.int64, device=count_G.device)
    marks_P.index_add_(0, start_G, torch.ones_like(start_G))
    segment_P = torch.cumsum(marks_P[:total], 0) - 1
    return segment_P, torch.arange(total, device=count_G.device) - start_G[segment_P]


class ValidIdIndex:
    """Items x M code matrix on a device, with per-subset sorted keys built on first use."""

    def __init__(self, table: SemanticIdTable, device: str | torch.device = "cpu") -> None:
        if table.num_items == 0:
            raise ValueError("the semantic ID table has no items")
        self.num_heads = table.num_heads
        self.codebook_size = table.codebook_size
        if self.codebook_size**self.num_heads >= _MAX_KEY:
            raise ValueError(
                f"K^M = {self.codebook_size}^{self.num_heads} does not fit the int64 index key"
            )
        self.device = torch.device(device)
        self.item_ids_N = torch.as_tensor(table.item_ids, dtype=torch.int64, device=self.device)
        self.codes_NM = torch.as_tensor(table.codes, dtype=torch.int64, device=self.device)
        self._radix_M = self.codebook_size ** torch.arange(
            self.num_heads, dtype=torch.int64, device=self.device
        )
        self._bits_M = 2 ** torch.arange(self.num_heads, dtype=torch.int64, device=self.device)
        self._sorted: dict[tuple[int, int], tuple[torch.Tensor, ...]] = {}

    @property
    def num_items(self) -> int:
        return int(self.codes_NM.shape[0])

    def key(self, filled_RM: torch.Tensor) -> torch.Tensor:
        """int64 [R]: sum over filled positions m of code_m * K^m (unfilled positions add 0)."""
        return (filled_RM.clamp(min=0) * self._radix_M).sum(-1)

    def _runs(self, subset: int, target: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Items sorted by (key over `subset`, key over `target`), `subset` within `target`.

        Returns the sorted subset keys [N], the cumulative number of runs of equal target key
        before each sorted position [N + 1], and the item row opening each run [runs].
        """
        return self._sorted_runs(subset, target)[:3]

    def _sorted_runs(
        self, subset: int, target: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """`_runs` and the item row at every sorted position [N]."""
        if (subset, target) not in self._sorted:
            subset_M = (subset & self._bits_M) > 0
            target_M = (target & self._bits_M) > 0
            key_target_N = (self.codes_NM * self._radix_M * target_M).sum(-1)
            key_subset_N = (self.codes_NM * self._radix_M * subset_M).sum(-1)
            order = torch.sort(key_target_N, stable=True).indices
            order = order[torch.sort(key_subset_N[order], stable=True).indices]
            sorted_target = key_target_N[order]
            opens = torch.ones(self.num_items, dtype=torch.bool, device=self.device)
            opens[1:] = sorted_target[1:] != sorted_target[:-1]
            cumulative = torch.zeros(self.num_items + 1, dtype=torch.int64, device=self.device)
            cumulative[1:] = torch.cumsum(opens, 0)
            self._sorted[(subset, target)] = (key_subset_N[order], cumulative, order[opens], order)
        return self._sorted[(subset, target)]

    def completions(
        self, filled_RM: torch.Tensor, target_RM: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One (beam, item row) pair per distinct code tuple at a beam's `target` positions.

        Only items that agree with the beam at every filled position count; `target_RM` (bool)
        must include the filled positions. The item row is one item carrying that tuple.
        Returns beam_P and row_P (int64), grouped by beam.
        """
        filled_R = ((filled_RM != UNFILLED).long() * self._bits_M).sum(-1)
        target_R = (target_RM.long() * self._bits_M).sum(-1)
        group_R = filled_R * 2**self.num_heads + target_R
        beams_parts, rows_parts = [], []
        for group in torch.unique(group_R).tolist():
            beams_G = (group_R == group).nonzero(as_tuple=True)[0]
            filled, target = divmod(group, 2**self.num_heads)
            sorted_keys, cumulative, opening_rows = self._runs(filled, target)
            keys_G = self.key(filled_RM[beams_G])
            first_G = cumulative[torch.searchsorted(sorted_keys, keys_G)]
            count_G = cumulative[torch.searchsorted(sorted_keys, keys_G, right=True)] - first_G
            segment_P, offset_P = _segments(count_G)
            beams_parts.append(beams_G[segment_P])
            rows_parts.append(opening_rows[first_G[segment_P] + offset_P])
        return torch.cat(beams_parts), torch.cat(rows_parts)

    def valid_codes(self, filled_RM: torch.Tensor) -> torch.Tensor:
        """bool [R, M, K]: code k is valid at unfilled position m of beam r if an item consistent
        with the beam's filled positions has it (rows of filled positions are left False)."""
        R, M = filled_RM.shape
        valid_RMK = torch.zeros(R, M, self.codebook_size, dtype=torch.bool, device=self.device)
        filled_RM_bool = filled_RM != UNFILLED
        for m in range(M):
            open_R = (~filled_RM_bool[:, m]).nonzero(as_tuple=True)[0]
            if not len(open_R):
                continue
            target = filled_RM_bool[open_R].clone()
            target[:, m] = True
            beam_P, row_P = self.completions(filled_RM[open_R], target)
            valid_RMK[open_R[beam_P], m, self.codes_NM[row_P, m]] = True
        return valid_RMK

    def best_consistent(
        self, partial_PM: torch.Tensor, user_P: torch.Tensor, values_UN: torch.Tensor
    ) -> torch.Tensor:
        """float [P]: the largest `values_UN[user_P[p], n]` over the items n (table rows)
        consistent with partial ID p (UNFILLED positions free); -inf where none is."""
        filled_P = ((partial_PM != UNFILLED).long() * self._bits_M).sum(-1)
        best_P = torch.full((len(partial_PM),), -torch.inf, device=self.device)
        for subset in torch.unique(filled_P).tolist():
            rows_G = (filled_P == subset).nonzero(as_tuple=True)[0]
            sorted_keys, cumulative, opening_rows, order_N = self._sorted_runs(subset, subset)
            run_N = cumulative[1:] - 1  # the run of each sorted position
            users_V, user_G = torch.unique(user_P[rows_G], return_inverse=True)
            runs = len(opening_rows)
            best_VR = torch.full((len(users_V), runs), -torch.inf, device=self.device)
            values_VN = values_UN[users_V][:, order_N].float()
            best_VR = best_VR.scatter_reduce(
                1, run_N.expand(len(users_V), -1), values_VN, reduce="amax", include_self=True
            )
            keys_G = self.key(partial_PM[rows_G])
            at_G = torch.searchsorted(sorted_keys, keys_G).clamp(max=self.num_items - 1)
            found_G = sorted_keys[at_G] == keys_G
            run_G = cumulative[at_G]
            best_P[rows_G] = torch.where(
                found_G, best_VR[user_G, run_G.clamp(max=runs - 1)], -torch.inf
            )
        return best_P

    def items_of(self, codes_RM: torch.Tensor) -> torch.Tensor:
        """int64 [R] item ids of complete IDs; ValueError if a tuple belongs to no item."""
        everything = 2**self.num_heads - 1
        sorted_keys, cumulative, opening_rows = self._runs(everything, everything)
        keys_R = self.key(codes_RM)
        at_R = torch.searchsorted(sorted_keys, keys_R).clamp(max=self.num_items - 1)
        if (codes_RM == UNFILLED).any() or not torch.equal(sorted_keys[at_R], keys_R):
            raise ValueError("a decoded semantic ID belongs to no item")
        return self.item_ids_N[opening_rows[cumulative[at_R]]]
